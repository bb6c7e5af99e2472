//! Configuration: embedded defaults, then `openpacs.toml` (or `--config`), then `OPENPACS_*`
//! environment variables, then command-line flags; later sources win.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

pub use crate::blobs_config::BlobsConfig;
use crate::config_sources::{explain, Named};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where blobs and the index live.
    pub data_dir: PathBuf,
    /// The index engine: unset for the embedded SQLite file in `data_dir`, or
    /// `postgres://user@host:port/database`, which several openpacs nodes share. Give a
    /// password through the environment (`OPENPACS_INDEX_URL`), not this file.
    pub index_url: Option<String>,
    /// Seconds a write to PostgreSQL may go unanswered before the connection is taken for lost
    /// and the writes refused as unavailable (the engine stopped answering without closing).
    pub index_write_timeout_secs: u64,
    /// Our AE title.
    pub ae_title: String,
    pub dicom_addr: IpAddr,
    pub dicom_port: u16,
    pub http_addr: IpAddr,
    pub http_port: u16,
    /// HL7 v2 (MLLP) listener for the RIS.
    pub hl7_addr: IpAddr,
    pub hl7_port: u16,
    /// Explicit opt-out of the secure default: accept HL7 on a non-loopback address (HL7 has no
    /// authentication; put it on a network only the RIS reaches).
    pub hl7_open_to_any_host: bool,
    /// HL7 connections open at once, and from one source address; more are closed.
    pub hl7_max_connections: usize,
    pub hl7_max_connections_per_source: usize,
    /// Seconds an HL7 connection may stay silent (before its first message or between two).
    pub hl7_idle_timeout_secs: u64,
    /// Seconds within which a message that has begun must end.
    pub hl7_message_timeout_secs: u64,
    /// The RIS's MLLP listener (`host:port`) for end-of-exam notices; none: not sent.
    pub ris_address: Option<String>,
    /// Without MPPS, a study that received nothing for this many seconds is reported ended to
    /// the RIS (once); 0 turns this off.
    pub study_stable_secs: u64,
    /// Seconds a node holds a claimed job (an outbound HL7 message…) before another node may
    /// take it over; renewed while the job runs, so this is how long a dead node's work waits.
    pub job_lease_secs: u64,
    /// Maximum concurrent DICOM associations.
    pub max_associations: usize,
    /// Largest PDU we accept, in bytes.
    pub max_pdu: u32,
    /// Seconds an association may stay idle.
    pub idle_timeout_secs: u64,
    /// Seconds allowed for the association request after connecting (ARTIM); meanwhile the
    /// connection is pending and holds no association slot.
    pub artim_timeout_secs: u64,
    /// DICOM connections waiting for their association request at once; more are closed.
    pub max_pending_associations: usize,
    /// Of those, from one source address.
    pub max_pending_per_source: usize,
    /// Refused DICOM and HL7 connections are audited once per source address and reason per
    /// this many seconds, with a count.
    pub refusal_audit_secs: u64,
    /// `/metrics` counts the archive's patients, studies, series, instances and bytes (a scan
    /// of the index) at most once per this many seconds; 0 counts at every scrape.
    pub metrics_count_secs: u64,
    /// Seconds shutdown waits for transfers in flight.
    pub shutdown_grace_secs: u64,
    /// Calling AE titles allowed to associate; empty means any.
    pub allowed_calling_aes: Vec<String>,
    /// Accept SOP classes not in the standard registry (private ones).
    pub accept_unknown_sop_classes: bool,
    /// Reject associations that call another AE title than ours.
    pub check_called_ae_title: bool,
    /// Explicit opt-out of the secure default: listen for DICOM on a non-loopback address
    /// without a calling-AE allow-list.
    pub dicom_open_to_any_ae: bool,
    /// Explicit opt-out of the secure default: serve HTTP on a non-loopback address with no
    /// authentication (every caller acts as an anonymous administrator).
    pub http_open_without_auth: bool,
    /// "auto" (default): logins required as soon as a user account exists; with none, HTTP is
    /// open on a loopback address only. "required": always. "off": never (loopback only,
    /// unless http_open_without_auth).
    pub http_auth: String,
    /// Accept HTTP Basic credentials (for DICOMweb clients that know nothing else).
    pub http_basic_auth: bool,
    /// Lifetime of a browser session, in hours.
    pub session_hours: u64,
    /// Wrong passwords in a row after which an account is locked (0: never).
    pub login_lockout_failures: u32,
    /// How long a lock-out lasts, in seconds.
    pub login_lockout_secs: u64,
    /// Failed log-ins are forgotten after this many seconds without one.
    pub login_lockout_window_secs: u64,
    /// First delay imposed after repeated failures (per account and per address), doubling
    /// with each further failure up to a minute; 0: no delays.
    pub login_failure_delay_ms: u64,
    /// Browser origins allowed to call the HTTP API (CORS); empty keeps CORS off.
    pub cors_allowed_origins: Vec<String>,
    /// The root clients reach the HTTP server at (`https://pacs.example.org`), used in the URLs
    /// it hands out (RetrieveURL, BulkDataURI); unset: the request's Host when it is the
    /// listen address or in `allowed_hosts`, else the listen address.
    pub public_base_url: Option<String>,
    /// Host header values (`host` or `host:port`) trusted for those URLs.
    pub allowed_hosts: Vec<String>,
    /// PEM certificate chain and private key: with both, HTTP is served over TLS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Seconds for an HTTP request's headers to arrive (also closes idle keep-alive
    /// connections, and bounds the TLS handshake).
    pub http_header_timeout_secs: u64,
    /// HTTP connections open at once; more are closed.
    pub http_max_connections: usize,
    /// A request body must bring at least `http_body_min_bytes` in every window of this many
    /// seconds spent waiting for it, or the request is cut (408).
    pub http_body_window_secs: u64,
    pub http_body_min_bytes: u64,
    /// Largest STOW-RS part, in bytes.
    pub stow_max_part_bytes: u64,
    /// Largest STOW-RS request, in bytes.
    pub stow_max_request_bytes: u64,
    /// Largest size a deflated data set may inflate to, in bytes (every path that inflates).
    pub max_inflated_bytes: u64,
    /// Largest part of an object held in memory to read its header (everything before Pixel
    /// Data), in bytes.
    pub max_header_bytes: u64,
    /// Storage commitment reports: on the requesting association while it is open (false), or
    /// always on a new association to the requester, which must be in `peers` (true).
    pub commitment_on_new_association: bool,
    /// Images whose accession number matches another patient's order: "correct" (the RIS
    /// wins: the study moves under the order's patient) or "flag" (listed for review).
    pub reconciliation: String,
    /// The identifier domain of local patient IDs (IPP): their Issuer of Patient ID. Images
    /// and HL7 messages without an issuer are taken to be in it.
    pub issuer_of_patient_id: String,
    /// The receiving facilities (MSH-6) whose HL7 messages this installation applies; empty
    /// means any. Others are refused with AR, naming the facility.
    pub hl7_facilities: Vec<String>,
    /// A re-send with a known SOP Instance UID and another content: "keep-first" (the first
    /// stays current) or "replace" (the newest is current, the previous kept superseded).
    pub duplicate_policy: String,
    /// Log format: "text" or "json".
    pub log_format: String,
    /// Known AEs (C-MOVE destinations).
    pub peers: Vec<PeerConfig>,
    /// Where blobs are kept: the data directory (default) or an S3-compatible bucket.
    pub blobs: BlobsConfig,
    /// Tariffs for `openpacs billing`.
    pub billing: crate::billing::BillingConfig,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    pub ae_title: String,
    pub host: String,
    pub port: u16,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./openpacs-data"),
            index_url: None,
            ae_title: "OPENPACS".into(),
            dicom_addr: IpAddr::from([127, 0, 0, 1]),
            dicom_port: 11112,
            http_addr: IpAddr::from([127, 0, 0, 1]),
            http_port: 8080,
            hl7_addr: IpAddr::from([127, 0, 0, 1]),
            hl7_port: 2575,
            hl7_open_to_any_host: false,
            hl7_max_connections: 64,
            hl7_max_connections_per_source: 8,
            hl7_idle_timeout_secs: 30,
            hl7_message_timeout_secs: 30,
            ris_address: None,
            study_stable_secs: 600,
            job_lease_secs: 60,
            index_write_timeout_secs: 30,
            max_associations: 64,
            max_pdu: 128 * 1024,
            idle_timeout_secs: 60,
            artim_timeout_secs: 5,
            max_pending_associations: 256,
            max_pending_per_source: 16,
            refusal_audit_secs: 60,
            metrics_count_secs: 60,
            shutdown_grace_secs: 30,
            allowed_calling_aes: Vec::new(),
            accept_unknown_sop_classes: true,
            check_called_ae_title: false,
            dicom_open_to_any_ae: false,
            http_open_without_auth: false,
            http_auth: "auto".into(),
            http_basic_auth: true,
            session_hours: 12,
            login_lockout_failures: 10,
            login_lockout_secs: 900,
            login_lockout_window_secs: 900,
            login_failure_delay_ms: 1000,
            cors_allowed_origins: Vec::new(),
            public_base_url: None,
            allowed_hosts: Vec::new(),
            tls_cert: None,
            tls_key: None,
            http_header_timeout_secs: 10,
            http_max_connections: 1024,
            http_body_window_secs: 30,
            http_body_min_bytes: 16 * 1024,
            stow_max_part_bytes: 2 << 30,
            stow_max_request_bytes: 16 << 30,
            max_inflated_bytes: pacs_dimse::dataset_check::Limits::default().max_inflated,
            max_header_bytes: pacs_dimse::dataset_check::Limits::default().max_header,
            commitment_on_new_association: false,
            reconciliation: "correct".into(),
            issuer_of_patient_id: String::new(),
            hl7_facilities: Vec::new(),
            duplicate_policy: "keep-first".into(),
            log_format: "text".into(),
            peers: Vec::new(),
            blobs: BlobsConfig::default(),
            billing: crate::billing::BillingConfig::default(),
        }
    }
}

/// Values given on the command line; `None` leaves the lower sources in charge. Only the
/// flags every subcommand uses are global; the listeners' flags belong to `serve`.
#[derive(Clone, Debug, Default, Serialize, clap::Args)]
pub struct Overrides {
    /// Configuration file (default: ./openpacs.toml if present).
    #[arg(long, global = true)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Data directory.
    #[arg(long, global = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// Set from `serve`'s own flags.
    #[arg(skip)]
    #[serde(flatten)]
    pub listeners: ServeFlags,
}

/// `openpacs serve`'s flags.
#[derive(Clone, Debug, Default, Serialize, clap::Args)]
pub struct ServeFlags {
    /// DICOM port.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dicom_port: Option<u16>,
    /// DICOM listen address.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dicom_addr: Option<IpAddr>,
    /// HTTP port.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_port: Option<u16>,
    /// HTTP listen address.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_addr: Option<IpAddr>,
    /// HL7 (MLLP) port.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hl7_port: Option<u16>,
    /// HL7 (MLLP) listen address.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hl7_addr: Option<IpAddr>,
    /// Our AE title.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ae_title: Option<String>,
}

impl Config {
    /// Loads and validates the configuration; errors name the value and where it came from.
    pub fn load(overrides: &Overrides) -> anyhow::Result<Config> {
        let mut figment = Figment::from(Named::defaults(Config::default()));
        match &overrides.config {
            Some(path) => {
                if !path.is_file() {
                    bail!("configuration file {} not found", path.display());
                }
                figment = figment.merge(Toml::file_exact(path));
            }
            None => figment = figment.merge(Toml::file("openpacs.toml")),
        }
        figment = figment
            // OPENPACS_LOG is the log filter, read by the logger, not a setting.
            .merge(
                Env::prefixed("OPENPACS_")
                    .filter(|k| !k.as_str().eq_ignore_ascii_case("log"))
                    .split("__"),
            )
            .merge(Named::command_line(overrides));
        let config: Config = figment.extract().map_err(|e| anyhow::anyhow!(explain(e)))?;
        let origin = |key: &str| crate::config_sources::origin(&figment, key);
        validate_ae(&config.ae_title)
            .with_context(|| format!("ae_title {:?} from {}", config.ae_title, origin("ae_title")))?;
        for ae in &config.allowed_calling_aes {
            validate_ae(ae).with_context(|| {
                format!(
                    "allowed_calling_aes entry {ae:?} from {}",
                    origin("allowed_calling_aes")
                )
            })?;
        }
        for peer in &config.peers {
            validate_ae(&peer.ae_title)
                .with_context(|| format!("peers entry {:?} from {}", peer.ae_title, origin("peers")))?;
            if peer.host.is_empty() || peer.port == 0 {
                bail!(
                    "peers entry {:?} from {} needs a host and a non-zero port",
                    peer.ae_title,
                    origin("peers")
                );
            }
        }
        config
            .blobs
            .location_without_credentials()
            .with_context(|| format!("blobs.url from {}", origin("blobs.url")))?;
        if config.max_associations == 0 {
            bail!(
                "max_associations must be at least 1 (from {})",
                origin("max_associations")
            );
        }
        // A zero here would refuse every connection, or cut every one at once.
        for (key, value) in [
            ("artim_timeout_secs", config.artim_timeout_secs),
            ("max_pending_associations", config.max_pending_associations as u64),
            ("max_pending_per_source", config.max_pending_per_source as u64),
            ("refusal_audit_secs", config.refusal_audit_secs),
            ("http_header_timeout_secs", config.http_header_timeout_secs),
            ("http_max_connections", config.http_max_connections as u64),
            ("http_body_window_secs", config.http_body_window_secs),
            ("hl7_max_connections", config.hl7_max_connections as u64),
            (
                "hl7_max_connections_per_source",
                config.hl7_max_connections_per_source as u64,
            ),
            ("hl7_idle_timeout_secs", config.hl7_idle_timeout_secs),
            ("hl7_message_timeout_secs", config.hl7_message_timeout_secs),
        ] {
            if value == 0 {
                bail!("{key} must be at least 1 (from {})", origin(key));
            }
        }
        if !(4096..=16 * 1024 * 1024).contains(&config.max_pdu) {
            bail!(
                "max_pdu {} from {} must be between 4096 and 16777216",
                config.max_pdu,
                origin("max_pdu")
            );
        }
        if !config.hl7_addr.is_loopback() && !config.hl7_open_to_any_host {
            bail!(
                "refusing to listen for HL7 on {} (hl7_addr from {}): HL7 has no authentication; \
                 set hl7_open_to_any_host = true on a network only the RIS reaches",
                config.hl7_addr,
                origin("hl7_addr")
            );
        }
        if config.index_write_timeout_secs == 0 {
            bail!(
                "index_write_timeout_secs from {} must be at least 1",
                origin("index_write_timeout_secs")
            );
        }
        if config.job_lease_secs < 2 {
            bail!(
                "job_lease_secs from {} must be at least 2 (a lease is renewed a few times over its length)",
                origin("job_lease_secs")
            );
        }
        if let Some(ris) = &config.ris_address {
            if ris
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_none()
            {
                bail!(
                    "ris_address {ris:?} from {} must be host:port",
                    origin("ris_address")
                );
            }
        }
        for (key, value) in [
            ("max_inflated_bytes", config.max_inflated_bytes),
            ("max_header_bytes", config.max_header_bytes),
        ] {
            if value < 1 << 20 {
                bail!(
                    "{key} = {value} from {} is too small: at least 1048576 (1 MiB)",
                    origin(key)
                );
            }
        }
        if !["keep-first", "replace"].contains(&config.duplicate_policy.as_str()) {
            bail!(
                "duplicate_policy {:?} from {} must be \"keep-first\" or \"replace\"",
                config.duplicate_policy,
                origin("duplicate_policy")
            );
        }
        if !["correct", "flag"].contains(&config.reconciliation.as_str()) {
            bail!(
                "reconciliation {:?} from {} must be \"correct\" or \"flag\"",
                config.reconciliation,
                origin("reconciliation")
            );
        }
        if !["text", "json"].contains(&config.log_format.as_str()) {
            bail!(
                "log_format {:?} from {} must be \"text\" or \"json\"",
                config.log_format,
                origin("log_format")
            );
        }
        // Secure by default: a PACS reachable from the network must know who may talk to it.
        if !config.dicom_addr.is_loopback()
            && config.allowed_calling_aes.is_empty()
            && !config.dicom_open_to_any_ae
        {
            bail!(
                "refusing to listen for DICOM on {} (dicom_addr from {}) without an allow-list: set allowed_calling_aes, \
                 or dicom_open_to_any_ae = true to accept any calling AE title",
                config.dicom_addr,
                origin("dicom_addr")
            );
        }
        if !["auto", "required", "off"].contains(&config.http_auth.as_str()) {
            bail!(
                "http_auth {:?} from {} must be \"auto\", \"required\" or \"off\"",
                config.http_auth,
                origin("http_auth")
            );
        }
        if config.http_auth == "off" && !config.http_addr.is_loopback() && !config.http_open_without_auth {
            bail!(
                "refusing to serve HTTP on {} (http_addr from {}) with http_auth = \"off\" (from {}): \
                 anyone on the network would have every right; set http_open_without_auth = true \
                 if that is really wanted",
                config.http_addr,
                origin("http_addr"),
                origin("http_auth")
            );
        }
        if config.session_hours == 0 {
            bail!(
                "session_hours from {} must be at least 1",
                origin("session_hours")
            );
        }
        if config.login_lockout_failures > 0 && config.login_lockout_secs == 0 {
            bail!(
                "login_lockout_secs from {} must be at least 1 (set login_lockout_failures = 0 to turn lock-outs off)",
                origin("login_lockout_secs")
            );
        }
        if config.tls_cert.is_some() != config.tls_key.is_some() {
            bail!("tls_cert and tls_key go together: set both or neither");
        }
        for origin_value in &config.cors_allowed_origins {
            if origin_value == "*"
                || !origin_value.contains("://")
                || origin_value.chars().any(|c| !c.is_ascii_graphic())
            {
                bail!(
                    "cors_allowed_origins entry {origin_value:?} from {} must be an origin such as \
                     https://viewer.example.org (\"*\" is not allowed: requests carry credentials)",
                    origin("cors_allowed_origins")
                );
            }
        }
        if let Some(base) = &config.public_base_url {
            // It is pasted into JSON and URLs as it is: nothing that could end a string.
            let scheme_ok = base.starts_with("http://") || base.starts_with("https://");
            if !scheme_ok
                || base
                    .chars()
                    .any(|c| !c.is_ascii_graphic() || "\"\\<>'`".contains(c))
            {
                bail!(
                    "public_base_url {base:?} from {} must be an http:// or https:// URL such as \
                     https://pacs.example.org",
                    origin("public_base_url")
                );
            }
        }
        for host in &config.allowed_hosts {
            if host.is_empty()
                || host
                    .chars()
                    .any(|c| !(c.is_ascii_alphanumeric() || ".-:[]".contains(c)))
            {
                bail!(
                    "allowed_hosts entry {host:?} from {} must be a host name or address, with \
                     its port unless it is the scheme's default (pacs.example.org:8080)",
                    origin("allowed_hosts")
                );
            }
        }
        Ok(config)
    }
}

/// AE titles: 1 to 16 characters of the default repertoire, no backslash or control characters.
fn validate_ae(ae: &str) -> anyhow::Result<()> {
    pacs_model::check_ae_title(ae).map_err(anyhow::Error::msg)
}
