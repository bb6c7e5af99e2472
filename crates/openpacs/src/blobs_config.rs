//! The `[blobs]` settings: where blobs are kept, and the bucket's credentials, which never
//! come from the configuration file itself (it is often world-readable and gets copied into
//! tickets) but from the environment or a file of their own.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use figment::providers::{Format, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use pacs_store::{BlobLocation, S3Settings};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlobsConfig {
    /// None: files under `data_dir/blobs`; `s3://bucket` or `s3://bucket/prefix`: a bucket.
    pub url: Option<String>,
    /// The S3 endpoint (`http://127.0.0.1:3900`, `https://s3.example.org`); none: AWS.
    pub endpoint: Option<String>,
    /// The S3 region (Garage's `s3_region`).
    pub region: String,
    /// A TOML file with `access_key_id` and `secret_access_key` (mode 0600); none: the
    /// environment's `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`.
    pub credentials_file: Option<PathBuf>,
}

impl Default for BlobsConfig {
    fn default() -> Self {
        BlobsConfig {
            url: None,
            endpoint: None,
            region: "us-east-1".into(),
            credentials_file: None,
        }
    }
}

/// What a credentials file holds.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    access_key_id: String,
    secret_access_key: String,
}

impl BlobsConfig {
    /// The bucket and prefix of an `s3://` URL, checked at load time (before any secret is
    /// read); `None` for the data directory.
    pub fn location_without_credentials(&self) -> anyhow::Result<Option<(String, String)>> {
        let Some(url) = self.url.as_deref().filter(|u| !u.is_empty()) else {
            return Ok(None);
        };
        let Some(rest) = url.strip_prefix("s3://") else {
            bail!("{url:?} is not an s3://bucket[/prefix] URL (leave it unset for files in data_dir)");
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            bail!("{url:?} names no bucket");
        }
        if let Some(endpoint) = &self.endpoint {
            if !endpoint.starts_with("http://") && !endpoint.starts_with("https://") {
                bail!("blobs.endpoint {endpoint:?} must start with http:// or https://");
            }
        }
        Ok(Some((bucket.to_string(), prefix.trim_matches('/').to_string())))
    }

    /// Where blobs are, with the bucket's credentials read from their file or the
    /// environment. Errors name where a credential was looked for, never its value.
    pub fn location(&self) -> anyhow::Result<BlobLocation> {
        let Some((bucket, prefix)) = self.location_without_credentials()? else {
            return Ok(BlobLocation::DataDir);
        };
        let credentials = match &self.credentials_file {
            Some(path) => read_credentials(path)?,
            None => {
                let var = |name: &str| {
                    std::env::var(name)
                        .ok()
                        .filter(|v| !v.is_empty())
                        .with_context(|| {
                            format!(
                                "blobs.url is an S3 bucket: set {name} in the environment, \
                             or blobs.credentials_file"
                            )
                        })
                };
                Credentials {
                    access_key_id: var("AWS_ACCESS_KEY_ID")?,
                    secret_access_key: var("AWS_SECRET_ACCESS_KEY")?,
                }
            }
        };
        Ok(BlobLocation::S3(S3Settings {
            bucket,
            prefix,
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            access_key_id: credentials.access_key_id,
            secret_access_key: credentials.secret_access_key,
        }))
    }
}

fn read_credentials(path: &Path) -> anyhow::Result<Credentials> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .with_context(|| format!("blobs.credentials_file {}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        bail!(
            "blobs.credentials_file {} can be read by other users (mode {:o}): chmod 600 it",
            path.display(),
            mode & 0o777
        );
    }
    // Only the key at fault is named: figment's own messages can quote a value.
    Figment::from(Toml::file_exact(path)).extract().map_err(|e| {
        let what = match &e.kind {
            figment::error::Kind::MissingField(field) => format!("{field} is missing"),
            figment::error::Kind::UnknownField(field, _) => format!("unknown key {field}"),
            _ => "must hold access_key_id and secret_access_key as strings".to_string(),
        };
        anyhow::anyhow!("blobs.credentials_file {}: {what}", path.display())
    })
}
