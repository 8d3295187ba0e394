//! QIDO-RS requests to one PACS over a pool of kept-alive HTTP/1.1 connections (TLS when the
//! URL is `https://`, trusting the CA configured for that PACS): the base URL configured for
//! the hospital, its `Authorization` header, a time limit per request and a size
//! limit per answer. A PACS that cannot be reached, answers late, answers an error or answers
//! what is not DICOM JSON gets an error saying so, naming the URL.

use std::time::Duration;

use std::sync::Arc;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::{Request, StatusCode, Uri, body::Bytes, header};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use serde_json::Value;
use tsunagi_net::client::Connector;

/// The largest QIDO-RS answer read (a page of studies, a study's instances).
pub(crate) const MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QidoError {
    /// Nothing answered (refused, reset, timed out): the PACS is down or unreachable.
    Unreachable(String),
    /// It answered, but not with what was asked (an error status, not JSON, too large).
    Answer(String),
}

impl std::error::Error for QidoError {}

impl std::fmt::Display for QidoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreachable(text) | Self::Answer(text) => f.write_str(text),
        }
    }
}

/// A PACS's DICOMweb services.
#[derive(Clone, Debug)]
pub struct Qido {
    base: String,
    authorization: Option<String>,
    timeout: Duration,
    client: Client<Connector, Empty<Bytes>>,
}

impl Qido {
    /// A client of the services at `base` (`http://host:port/path` or `https://…`, no trailing
    /// slash needed); `tls` trusts the PACS's CA (needed for `https://`).
    pub fn new(
        base: &str,
        authorization: Option<String>,
        timeout: Duration,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Self, String> {
        let uri: Uri = base
            .parse()
            .map_err(|error| format!("{base:?} is not a URL: {error}"))?;
        match uri.scheme_str() {
            Some("http") if tls.is_some() => {
                return Err(format!(
                    "{base}: a CA file is configured for this PACS but the URL is http://, so \
                     nothing would be encrypted: use https://"
                ));
            }
            Some("http") => {}
            Some("https") if tls.is_some() => {}
            Some("https") => {
                return Err(format!(
                    "{base}: TLS to a PACS needs the CA certificates to trust for it (ca_file, \
                     --ca-file): a PEM file"
                ));
            }
            _ => {
                return Err(format!(
                    "{base}: the DICOMweb base URL must be http://… or https://…"
                ));
            }
        }
        if uri.host().is_none() {
            return Err(format!("{base}: no host"));
        }
        let connector = Connector::new(tls, timeout);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(16)
            .build(connector);
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            authorization,
            timeout,
            client,
        })
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET <base>/<path>` as DICOM JSON: the array of data sets (none for 204).
    pub async fn get(&self, path: &str) -> Result<Value, QidoError> {
        Ok(self.page(path).await?.0)
    }

    /// [`Qido::get`], and whether the PACS said it cut the answer short (`Warning: 299`: more
    /// matches than it returns at once).
    pub async fn page(&self, path: &str) -> Result<(Value, bool), QidoError> {
        let url = format!("{}/{path}", self.base);
        // A kept-alive connection the PACS closed just as it was reused fails before any answer:
        // a GET is safe to send again, a few times, on a fresh connection.
        let mut attempt = 0u32;
        let (status, cut, body) = loop {
            match self.once(&url).await {
                Ok(answer) => break answer,
                Err((error, true)) if attempt < RETRIES => {
                    tracing::debug!(%error, attempt, "QIDO-RS request sent again");
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
                }
                Err((error, _)) => return Err(error),
            }
        };
        if status == StatusCode::NO_CONTENT || (status.is_success() && body.is_empty()) {
            return Ok((Value::Array(Vec::new()), false));
        }
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
            return Err(QidoError::Answer(format!(
                "{url}: the PACS answered {status}: {text}"
            )));
        }
        let value: Value = serde_json::from_slice(&body).map_err(|error| {
            QidoError::Answer(format!("{url}: the answer is not DICOM JSON: {error}"))
        })?;
        if !value.is_array() {
            return Err(QidoError::Answer(format!(
                "{url}: the answer is not a list of data sets"
            )));
        }
        Ok((value, cut))
    }

    /// One exchange: the status and body, or the error and whether sending again may help (the
    /// request failed before an answer began, not for lack of time).
    async fn once(&self, url: &str) -> Result<(StatusCode, bool, Bytes), (QidoError, bool)> {
        let mut request =
            Request::get(url).header(header::ACCEPT, "application/dicom+json, application/json");
        if let Some(authorization) = &self.authorization {
            request = request.header(header::AUTHORIZATION, authorization);
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(|error| (QidoError::Answer(format!("{url}: {error}")), false))?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|error| {
                let said = tsunagi_net::client::describe(&error);
                // A certificate refused stays refused: not sent again.
                let again = !said.contains("certificate");
                (QidoError::Unreachable(format!("{url}: {said}")), again)
            })?;
            let status = response.status();
            let cut = response
                .headers()
                .get_all(header::WARNING)
                .iter()
                .any(|value| value.as_bytes().starts_with(b"299"));
            let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|error| {
                    (
                        QidoError::Answer(format!("{url}: the answer could not be read: {error}")),
                        false,
                    )
                })?
                .to_bytes();
            Ok((status, cut, body))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| {
                (
                    QidoError::Unreachable(format!("{url}: no answer within {:?}", self.timeout)),
                    false,
                )
            })?
    }
}

/// Times a request that failed before any answer is sent again.
const RETRIES: u32 = 3;
