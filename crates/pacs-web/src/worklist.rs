//! `GET /api/worklist?date=&modality=&station=`: the scheduled procedure steps of a day for the
//! technologists' page, in every state (SCHEDULED, IN PROGRESS, COMPLETED, DISCONTINUED: the
//! Modality Worklist itself answers only the first two), each with the status of its latest
//! performed procedure step (MPPS) when the modality sent one. Plain JSON, audited like every
//! search of patient data.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Query};
use axum::response::{IntoResponse, Response};
use axum::Json;
use pacs_store::{AuditEvent, WorklistFilter, WorklistItem};

use crate::{ApiError, WebState};

/// What the page asks: one day (YYYYMMDD or YYYY-MM-DD; every day when absent), one modality,
/// one station AE title, each optional.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WorklistQuery {
    date: Option<String>,
    modality: Option<String>,
    station: Option<String>,
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

impl WorklistQuery {
    fn filter(self) -> Result<WorklistFilter, ApiError> {
        let date = match non_empty(self.date) {
            None => None,
            Some(raw) => Some(pacs_model::normalize_date(&raw.replace('-', "")).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "date {raw:?} is not a date: expected YYYYMMDD or YYYY-MM-DD"
                ))
            })?),
        };
        Ok(WorklistFilter {
            modality: non_empty(self.modality).map(|m| m.to_ascii_uppercase()),
            station_ae: non_empty(self.station),
            date_from: date.clone(),
            date_to: date,
            any_status: true,
        })
    }
}

fn item_json(item: &WorklistItem, mpps: Option<&String>) -> serde_json::Value {
    let order = &item.order;
    serde_json::json!({
        "placer_order": order.placer_order,
        "filler_order": order.filler_order,
        "accession_number": order.accession_number,
        "requested_procedure_id": order.requested_procedure_id,
        "procedure": order.requested_procedure_description.as_ref().or(order.sps_description.as_ref()),
        "study_uid": order.study_uid,
        "sps_id": order.sps_id,
        "modality": order.modality,
        "station_ae": order.station_ae,
        "station_name": order.station_name,
        "start_date": order.start_date,
        "start_time": order.start_time,
        "status": order.status,
        "mpps_status": mpps,
        "referring_physician": order.referring_physician,
        "performing_physician": order.performing_physician,
        "patient_id": item.patient.key.patient_id,
        "issuer_of_patient_id": item.patient.key.issuer,
        "patient_name": item.patient.name,
        "birth_date": item.patient.birth_date,
        "sex": item.patient.sex,
    })
}

pub(crate) async fn worklist(
    axum::Extension(state): axum::Extension<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    query: Result<Query<WorklistQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let filter = match query
        .map_err(|e| ApiError::BadRequest(e.body_text()))
        .and_then(|Query(q)| q.filter())
    {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let detail = format!(
        "REST worklist date={} modality={} station={}",
        filter.date_from.as_deref().unwrap_or("*"),
        filter.modality.as_deref().unwrap_or("*"),
        filter.station_ae.as_deref().unwrap_or("*"),
    );
    let index = state.archive.index();
    let found = match index.worklist(filter).await {
        Ok(items) => {
            let accessions: Vec<String> = items
                .iter()
                .filter_map(|i| i.order.accession_number.clone())
                .collect();
            index
                .mpps_states(&accessions)
                .await
                .map(|states| (items, states.into_iter().collect::<HashMap<_, _>>()))
        }
        Err(e) => Err(e),
    };
    state
        .archive
        .record(AuditEvent {
            event: "query".into(),
            actor: crate::auth::current_actor(),
            peer: peer.to_string(),
            outcome: if found.is_ok() { "success" } else { "failure" }.into(),
            detail: Some(match &found {
                Ok((items, _)) => format!("{detail} matches={}", items.len()),
                Err(_) => detail,
            }),
            ..AuditEvent::default()
        })
        .await;
    match found {
        Ok((items, states)) => {
            let items: Vec<serde_json::Value> = items
                .iter()
                .map(|i| item_json(i, i.order.accession_number.as_ref().and_then(|a| states.get(a))))
                .collect();
            Json(serde_json::json!({ "items": items })).into_response()
        }
        Err(e) => ApiError::Internal(e.to_string()).into_response(),
    }
}
