//! The route table: every HTTP route with the access it needs, in one list from which both the
//! axum router and the authorization decision are built. A route cannot be added without
//! saying what it needs, and the middleware decides from the route axum matched
//! (axum's `MatchedPath`: the template, such as `/dicom-web/studies/{study}/thumbnail`), never from
//! the words of the path, so a UID spelled `thumbnail` is still a UID.

use std::collections::HashMap;

use axum::handler::Handler;
use axum::http::{header, Method};
use axum::response::IntoResponse;
use axum::routing::{on, MethodFilter, MethodRouter};

use crate::auth::{form_pairs, Access, Permission};
use crate::{admin, api, auth, frames, jobs, metadata, qido, rendered, stow, wado, wado_uri, worklist};
use crate::{MetricsRender, WebState};

/// What a route needs: a fixed [`Access`], or for WADO-URI one that depends on the query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    Is(Access),
    /// WADO-URI: Render, but Retrieve when `contentType` lists `application/dicom` (the
    /// original object), the query decoded exactly as the handler decodes it, so that an
    /// escaped `application%2Fdicom` cannot pass as a rendering request.
    WadoUri,
}

impl Rule {
    /// What a request with this query string needs.
    pub fn resolve(self, query: Option<&str>) -> Access {
        match self {
            Rule::Is(access) => access,
            Rule::WadoUri => {
                let wants_dicom = form_pairs(query.unwrap_or_default())
                    .iter()
                    .any(|(k, v)| k == "contentType" && v.contains("application/dicom"));
                Access::Need(if wants_dicom {
                    Permission::Retrieve
                } else {
                    Permission::Render
                })
            }
        }
    }
}

/// One entry of the table: method, path template (axum syntax) and what it needs.
#[derive(Clone, Debug)]
pub struct RouteSpec {
    pub method: Method,
    pub path: &'static str,
    pub rule: Rule,
}

/// A route with its handler.
pub(crate) struct Route {
    pub(crate) spec: RouteSpec,
    pub(crate) handler: MethodRouter<WebState>,
}

fn route<H, T>(method: Method, path: &'static str, rule: Rule, handler: H) -> Route
where
    H: Handler<T, WebState>,
    T: 'static,
{
    let filter = MethodFilter::try_from(method.clone()).expect("a method axum can route");
    Route {
        spec: RouteSpec { method, path, rule },
        handler: on(filter, handler),
    }
}

/// Every route the server answers (the UI's fallback aside, which serves only the embedded
/// files). `GET` routes answer `HEAD` too, with the same rule.
pub(crate) fn table(metrics: MetricsRender) -> Vec<Route> {
    use Access::{AnyUser, Need, Public};
    use Method as M;
    use Permission::*;
    let is = Rule::Is;
    let search = is(Need(Search));
    let retrieve = is(Need(Retrieve));
    let render = is(Need(Render));
    let store = is(Need(Store));
    let admin = is(Need(Admin));
    let operate = is(Need(Operate));
    let metrics = move || {
        let text = metrics();
        async move { ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text.await).into_response() }
    };
    const DW: &str = "/dicom-web/studies/{study}/series/{series}/instances/{instance}";
    vec![
        route(M::GET, "/healthz", is(Public), crate::health::healthz),
        route(M::GET, "/metrics", is(Public), metrics),
        // DICOMweb: QIDO-RS searches.
        route(M::GET, "/dicom-web/studies", search, qido::studies),
        route(M::GET, "/dicom-web/series", search, qido::all_series),
        route(M::GET, "/dicom-web/instances", search, qido::all_instances),
        route(
            M::GET,
            "/dicom-web/studies/{study}/series",
            search,
            qido::study_series,
        ),
        route(
            M::GET,
            "/dicom-web/studies/{study}/instances",
            search,
            qido::study_instances,
        ),
        route(
            M::GET,
            "/dicom-web/studies/{study}/series/{series}/instances",
            search,
            qido::series_instances,
        ),
        // STOW-RS.
        route(M::POST, "/dicom-web/studies", store, stow::store),
        route(M::POST, "/dicom-web/studies/{study}", store, stow::store_in_study),
        // WADO-RS: originals and what is derived losslessly from them.
        route(M::GET, "/dicom-web/studies/{study}", retrieve, wado::study),
        route(
            M::GET,
            "/dicom-web/studies/{study}/series/{series}",
            retrieve,
            wado::series,
        ),
        route(M::GET, DW, retrieve, wado::instance),
        route(
            M::GET,
            "/dicom-web/studies/{study}/metadata",
            retrieve,
            metadata::study,
        ),
        route(
            M::GET,
            "/dicom-web/studies/{study}/series/{series}/metadata",
            retrieve,
            metadata::series,
        ),
        route(
            M::GET,
            "/dicom-web/studies/{study}/series/{series}/instances/{instance}/metadata",
            retrieve,
            metadata::instance,
        ),
        route(
            M::GET,
            "/dicom-web/studies/{study}/series/{series}/instances/{instance}/bulkdata/{tag}",
            retrieve,
            metadata::bulkdata,
        ),
        route(
            M::GET,
            "/dicom-web/studies/{study}/series/{series}/instances/{instance}/frames/{frames}",
            retrieve,
            frames::frames,
        ),
        // Rendered previews and thumbnails: display only.
        route(
            M::GET,
            "/dicom-web/studies/{study}/series/{series}/instances/{instance}/frames/{frames}/rendered",
            render,
            rendered::frames,
        ),
        route(
            M::GET,
            "/dicom-web/studies/{study}/series/{series}/instances/{instance}/frames/{frames}/thumbnail",
            render,
            rendered::frames_thumbnail,
        ),
        route(
            M::GET,
            "/dicom-web/studies/{study}/series/{series}/instances/{instance}/rendered",
            render,
            rendered::instance,
        ),
        route(
            M::GET,
            "/dicom-web/studies/{study}/series/{series}/instances/{instance}/thumbnail",
            render,
            rendered::instance_thumbnail,
        ),
        route(
            M::GET,
            "/dicom-web/studies/{study}/series/{series}/thumbnail",
            render,
            rendered::series_thumbnail,
        ),
        route(
            M::GET,
            "/dicom-web/studies/{study}/thumbnail",
            render,
            rendered::study_thumbnail,
        ),
        route(M::GET, "/wado", Rule::WadoUri, wado_uri::wado),
        // The REST API.
        route(M::POST, "/api/login", is(Public), auth::login),
        route(M::POST, "/api/logout", is(Public), auth::logout),
        route(M::GET, "/api/me", is(AnyUser), auth::me),
        route(M::GET, "/api/openapi.json", is(Public), api::openapi),
        route(M::GET, "/api/patients", search, api::patients),
        route(M::GET, "/api/studies", search, api::studies),
        route(M::GET, "/api/studies/{study}", search, api::study),
        route(M::DELETE, "/api/studies/{study}", admin, api::delete),
        route(M::GET, "/api/studies/{study}/archive", retrieve, api::archive),
        // Reports are for referrers too (they see previews and reports).
        route(M::GET, "/api/studies/{study}/reports", search, api::reports),
        route(M::GET, "/api/review/studies", search, api::review),
        // The technologists' worklist page: scheduled procedures and their state.
        route(M::GET, "/api/worklist", search, worklist::worklist),
        route(M::GET, "/api/merges", search, api::merges),
        route(M::POST, "/api/merges/{id}/undo", admin, api::undo_merge),
        route(M::GET, "/api/studies/{study}/series", search, api::study_series),
        route(
            M::DELETE,
            "/api/studies/{study}/series/{series}",
            admin,
            api::delete,
        ),
        route(
            M::GET,
            "/api/studies/{study}/series/{series}/instances",
            search,
            api::series_instances,
        ),
        route(
            M::DELETE,
            "/api/studies/{study}/series/{series}/instances/{instance}",
            admin,
            api::delete,
        ),
        route(M::GET, "/api/series", search, api::series),
        route(M::GET, "/api/instances", search, api::instances),
        route(M::GET, "/api/stats", search, api::stats),
        // The platform operator's: tenants and their usage, never patient data.
        route(M::GET, "/api/tenants", operate, crate::tenants::list),
        route(M::POST, "/api/tenants", operate, crate::tenants::add),
        route(M::PUT, "/api/tenants/{name}", operate, crate::tenants::set),
        route(
            M::POST,
            "/api/tenants/{name}/disable",
            operate,
            crate::tenants::disable,
        ),
        route(
            M::POST,
            "/api/tenants/{name}/enable",
            operate,
            crate::tenants::enable,
        ),
        route(M::GET, "/api/users", admin, admin::users),
        route(M::POST, "/api/users", admin, admin::add_user),
        route(M::DELETE, "/api/users/{username}", admin, admin::remove_user),
        route(M::PUT, "/api/users/{username}/role", admin, admin::set_role),
        route(
            M::PUT,
            "/api/users/{username}/password",
            admin,
            admin::set_password,
        ),
        route(M::POST, "/api/users/{username}/unlock", admin, admin::unlock),
        route(M::GET, "/api/aes", admin, admin::aes),
        route(M::GET, "/api/aes/{aet}", admin, admin::ae),
        route(M::PUT, "/api/aes/{aet}", admin, admin::put_ae),
        route(M::DELETE, "/api/aes/{aet}", admin, admin::remove_ae),
        route(M::POST, "/api/aes/{aet}/echo", admin, admin::echo),
        route(M::GET, "/api/audit", admin, admin::audit),
        // The same search on the platform's own trail (tenant changes, operators' log-ins and
        // what reached no tenant): an operator's requests are the platform's.
        route(M::GET, "/api/platform/audit", operate, admin::audit),
        // Durable jobs (outbound HL7…), every node's: their state, and a retry of a failed one.
        route(M::GET, "/api/jobs", admin, jobs::list),
        route(M::POST, "/api/jobs/{id}/retry", admin, jobs::retry),
    ]
}

/// The table without its handlers: what tests enumerate to try every route with every role.
pub fn route_table() -> Vec<RouteSpec> {
    table(std::sync::Arc::new(|| Box::pin(async { String::new() })))
        .into_iter()
        .map(|r| r.spec)
        .collect()
}

/// The rules of the table by method and template, for the middleware.
pub(crate) struct Rules(HashMap<(Method, &'static str), Rule>);

impl Rules {
    pub(crate) fn of(specs: impl IntoIterator<Item = RouteSpec>) -> Rules {
        let mut rules = HashMap::new();
        for spec in specs {
            let previous = rules.insert((spec.method, spec.path), spec.rule);
            assert!(previous.is_none(), "route {} listed twice", spec.path);
        }
        Rules(rules)
    }

    /// What a request needs, from the route axum matched. No match means the UI's fallback
    /// (embedded files only; 404 under the data roots): public. A method the route does not
    /// list (axum answers 405) needs Admin, so nothing unlisted ever runs for less.
    pub(crate) fn needed(&self, method: &Method, matched: Option<&str>, query: Option<&str>) -> Access {
        if method == Method::OPTIONS {
            return Access::Public; // CORS preflight carries no credentials by design.
        }
        let Some(matched) = matched else {
            return Access::Public;
        };
        let method = if method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        self.0
            .get(&(method.clone(), matched))
            .map_or(Access::Need(Permission::Admin), |rule| rule.resolve(query))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the table says a method and template need (a route missing from the table fails).
    fn needs(method: Method, template: &str, query: Option<&str>) -> Access {
        route_table()
            .into_iter()
            .find(|s| s.method == method && s.path == template)
            .unwrap_or_else(|| panic!("{method} {template} is not in the table"))
            .rule
            .resolve(query)
    }

    fn get(template: &str) -> Access {
        needs(Method::GET, template, None)
    }

    #[test]
    fn routes_need_what_they_reach() {
        use Permission::*;
        assert_eq!(get("/healthz"), Access::Public);
        assert_eq!(get("/metrics"), Access::Public);
        assert_eq!(get("/dicom-web/studies"), Access::Need(Search));
        assert_eq!(get("/dicom-web/studies/{study}/series"), Access::Need(Search));
        assert_eq!(
            get("/dicom-web/studies/{study}/series/{series}/instances"),
            Access::Need(Search)
        );
        assert_eq!(get("/dicom-web/studies/{study}"), Access::Need(Retrieve));
        assert_eq!(get("/dicom-web/studies/{study}/metadata"), Access::Need(Retrieve));
        assert_eq!(
            get("/dicom-web/studies/{study}/series/{series}/instances/{instance}/frames/{frames}"),
            Access::Need(Retrieve)
        );
        assert_eq!(
            get("/dicom-web/studies/{study}/series/{series}/instances/{instance}/rendered"),
            Access::Need(Render)
        );
        assert_eq!(get("/dicom-web/studies/{study}/thumbnail"), Access::Need(Render));
        assert_eq!(
            needs(Method::POST, "/dicom-web/studies", None),
            Access::Need(Store)
        );
        let wado = |q: &str| needs(Method::GET, "/wado", Some(q));
        assert_eq!(
            wado("requestType=WADO&contentType=application/dicom"),
            Access::Need(Retrieve)
        );
        assert_eq!(
            wado("requestType=WADO&contentType=application%2Fdicom"),
            Access::Need(Retrieve)
        );
        assert_eq!(
            wado("requestType=WADO&contentType=image/jpeg,application/dicom"),
            Access::Need(Retrieve)
        );
        assert_eq!(wado("requestType=WADO"), Access::Need(Render));
        assert_eq!(get("/api/studies"), Access::Need(Search));
        assert_eq!(get("/api/studies/{study}/archive"), Access::Need(Retrieve));
        assert_eq!(
            needs(Method::DELETE, "/api/studies/{study}", None),
            Access::Need(Admin)
        );
        assert_eq!(get("/api/users"), Access::Need(Admin));
        assert_eq!(get("/api/aes"), Access::Need(Admin));
        assert_eq!(get("/api/jobs"), Access::Need(Admin));
        assert_eq!(
            needs(Method::POST, "/api/jobs/{id}/retry", None),
            Access::Need(Admin)
        );
        assert_eq!(needs(Method::PUT, "/api/aes/{aet}", None), Access::Need(Admin));
        assert_eq!(
            needs(Method::POST, "/api/aes/{aet}/echo", None),
            Access::Need(Admin)
        );
        assert_eq!(
            needs(Method::PUT, "/api/users/{username}/role", None),
            Access::Need(Admin)
        );
        assert_eq!(needs(Method::POST, "/api/login", None), Access::Public);
        assert_eq!(get("/api/me"), Access::AnyUser);
    }

    #[test]
    fn the_decision_follows_the_matched_route_not_the_words_of_the_path() {
        let rules = Rules::of(route_table());
        let instance = "/dicom-web/studies/{study}/series/{series}/instances/{instance}";
        let need = |m: Method, p: &str| rules.needed(&m, Some(p), None);
        assert_eq!(need(Method::GET, instance), Access::Need(Permission::Retrieve));
        assert_eq!(need(Method::HEAD, instance), Access::Need(Permission::Retrieve));
        // A method the route does not list needs the strongest permission.
        assert_eq!(need(Method::DELETE, instance), Access::Need(Permission::Admin));
        assert_eq!(need(Method::OPTIONS, instance), Access::Public);
        // No matched route: the UI's fallback.
        assert_eq!(rules.needed(&Method::GET, None, None), Access::Public);
    }
}
