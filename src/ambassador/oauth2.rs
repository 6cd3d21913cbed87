//! OAuth2 client credentials (RFC 6749 §4.4): the ambassador fetches an access token with the client id and
//! secret mounted from a Secret, caches it until shortly before it expires, and sends it as the bearer. The app
//! never sees the token nor the client secret.
//!
//! The `oauth2` crate builds the token request (form body, HTTP Basic client authentication) and reads the answer
//! (token, lifetime, RFC 6749 §5.2 errors); the exchange runs on hyper and rustls like the proxy itself. One fetch
//! serves every request waiting for it: concurrent requests queue behind a single refresh instead of each asking
//! the token endpoint, and requests that arrived before a failed fetch share its answer rather than retrying it one
//! by one. A token that can no longer be refreshed is still used until it actually expires.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use oauth2::basic::BasicClient;
use oauth2::{ClientId, ClientSecret, HttpRequest, HttpResponse, Scope, TokenResponse, TokenUrl};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;

use super::metrics::{Metrics, TokenSource};

/// The lifetime assumed when the token endpoint does not say (`expires_in` is only RECOMMENDED).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);
/// The longest a token is refreshed ahead of its expiry; shorter lifetimes refresh at 80 % of their life.
const MAX_MARGIN: Duration = Duration::from_secs(60);
/// The largest token response read.
const MAX_RESPONSE: usize = 1 << 20;

/// Where the client credentials come from and where they are exchanged.
#[derive(Debug, Clone)]
pub struct OAuth2Settings {
    /// The token endpoint (`https://`).
    pub token_url: String,
    /// The file holding the client id (a mounted Secret key).
    pub client_id_file: PathBuf,
    /// The file holding the client secret.
    pub client_secret_file: PathBuf,
    /// Scopes asked for; none lets the server choose.
    pub scopes: Vec<String>,
    /// Bound on one token exchange (connect, TLS, request and answer).
    pub timeout: Duration,
}

/// Why no token could be had.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot get an OAuth2 token from {url}: {message}")]
pub struct OAuth2Error {
    /// The token endpoint.
    pub url: String,
    /// What failed.
    pub message: String,
}

/// Why the token exchange's HTTP request failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeHttpError {
    /// The token URL has no host, or one a certificate cannot name.
    #[error("the token URL {0:?} has no usable host")]
    Host(String),
    /// TCP, TLS or HTTP failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// HTTP failed.
    #[error("{0}")]
    Http(#[from] hyper::Error),
    /// The answer was too large or broke off.
    #[error("reading the answer: {0}")]
    Body(String),
    /// The exchange took longer than allowed.
    #[error("no answer within {0}")]
    Timeout(String),
}

/// A token and when to stop using it.
#[derive(Debug, Clone)]
struct Cached {
    header: HeaderValue,
    refresh_at: Instant,
    expires_at: Instant,
}

/// A failed fetch, shared with the requests that were already waiting for it.
#[derive(Debug)]
struct Failure {
    at: Instant,
    error: OAuth2Error,
}

/// The OAuth2 credential of one ambassador.
pub struct OAuth2 {
    settings: OAuth2Settings,
    token_url: TokenUrl,
    tls: tokio_rustls::TlsConnector,
    current: Mutex<Option<Cached>>,
    /// Held by the one fetch in progress; remembers the last failure.
    refresh: tokio::sync::Mutex<Option<Failure>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for OAuth2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth2")
            .field("token_url", &self.settings.token_url)
            .finish_non_exhaustive()
    }
}

impl OAuth2 {
    /// Prepares fetching; the first token is fetched by the first request. `tls` verifies the token endpoint.
    pub fn new(
        settings: OAuth2Settings,
        tls: rustls::ClientConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Self, OAuth2Error> {
        // The rule the webhook applies to `entourage.dev/ambassador-oauth2`, so both refuse the same URLs.
        crate::core::annotations::check_token_url(&settings.token_url).map_err(|rule| OAuth2Error {
            url: settings.token_url.clone(),
            message: format!("the URL {rule}"),
        })?;
        let token_url = TokenUrl::new(settings.token_url.clone()).map_err(|e| OAuth2Error {
            url: settings.token_url.clone(),
            message: format!("not a URL: {e}"),
        })?;
        Ok(Self {
            token_url,
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            settings,
            current: Mutex::new(None),
            refresh: tokio::sync::Mutex::new(None),
            metrics,
        })
    }

    fn cached(&self) -> Option<Cached> {
        self.current.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The `Authorization` value to send now: the cached token, or a fresh one fetched once for every waiter.
    /// Boxed: the `oauth2` crate's request future is generic over lifetimes, and rustc cannot prove a future that
    /// contains it `Send` for the proxy's connection tasks (rust-lang/rust#102211).
    pub fn header(&self) -> Pin<Box<dyn Future<Output = Result<HeaderValue, OAuth2Error>> + Send + '_>> {
        Box::pin(self.header_inner())
    }

    async fn header_inner(&self) -> Result<HeaderValue, OAuth2Error> {
        let arrived = Instant::now();
        match self.cached() {
            Some(token) if arrived < token.refresh_at => return Ok(token.header),
            _ => {}
        }
        let mut last_failure = self.refresh.lock().await;
        // Whoever held the lock before may have refreshed the token, or failed to, while this request waited.
        match self.cached() {
            Some(token) if Instant::now() < token.refresh_at => return Ok(token.header),
            _ => {}
        }
        if let Some(failure) = last_failure.as_ref().filter(|f| f.at >= arrived) {
            return self.unexpired_or(failure.error.clone());
        }
        let started = Instant::now();
        match self.fetch(started).await {
            Ok(token) => {
                let header = token.header.clone();
                *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(token);
                *last_failure = None;
                self.metrics.token_refresh(TokenSource::OAuth2);
                tracing::info!(token_url = %self.settings.token_url, "fetched an OAuth2 access token");
                Ok(header)
            }
            Err(error) => {
                tracing::warn!(%error, "OAuth2 token fetch failed");
                *last_failure = Some(Failure {
                    at: Instant::now(),
                    error: error.clone(),
                });
                self.unexpired_or(error)
            }
        }
    }

    /// The cached token while it has not expired (the endpoint may be back before it does), else `error`.
    fn unexpired_or(&self, error: OAuth2Error) -> Result<HeaderValue, OAuth2Error> {
        match self.cached() {
            Some(token) if Instant::now() < token.expires_at => Ok(token.header),
            _ => Err(error),
        }
    }

    async fn fetch(&self, started: Instant) -> Result<Cached, OAuth2Error> {
        let fail = |message: String| OAuth2Error {
            url: self.settings.token_url.clone(),
            message,
        };
        // Read at every fetch: a rotated client secret is used from the next refresh on.
        let id = read_trimmed(&self.settings.client_id_file).map_err(&fail)?;
        let secret = read_trimmed(&self.settings.client_secret_file).map_err(&fail)?;
        let client = BasicClient::new(ClientId::new(id))
            .set_client_secret(ClientSecret::new(secret))
            .set_token_uri(self.token_url.clone());
        let http = Exchanger {
            tls: self.tls.clone(),
            timeout: self.settings.timeout,
        };
        let response = client
            .exchange_client_credentials()
            .add_scopes(self.settings.scopes.iter().cloned().map(Scope::new))
            .request_async(&http)
            .await
            .map_err(|e| fail(request_error_text(&e)))?;
        let mut header = HeaderValue::try_from(format!("Bearer {}", response.access_token().secret()))
            .map_err(|_| fail("the access token is not a valid HTTP header value".into()))?;
        header.set_sensitive(true);
        let lifetime = response.expires_in().unwrap_or(DEFAULT_LIFETIME);
        let margin = (lifetime / 5).min(MAX_MARGIN);
        Ok(Cached {
            header,
            refresh_at: started + lifetime - margin,
            expires_at: started + lifetime,
        })
    }
}

/// The HTTP client the `oauth2` crate calls: an owned, named type with a boxed `Send` future, since the request
/// future runs inside the proxy's `Send` connection tasks (a borrowing closure's would not prove `Send` for every
/// lifetime).
struct Exchanger {
    tls: tokio_rustls::TlsConnector,
    timeout: Duration,
}

impl<'c> oauth2::AsyncHttpClient<'c> for Exchanger {
    type Error = ExchangeHttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, ExchangeHttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.exchange(request))
    }
}

impl Exchanger {
    /// One HTTP/1.1 exchange with the token endpoint over TLS, bounded by the timeout.
    async fn exchange(&self, request: HttpRequest) -> Result<HttpResponse, ExchangeHttpError> {
        let limit = self.timeout;
        tokio::time::timeout(limit, self.exchange_unbounded(request))
            .await
            .unwrap_or_else(|_| Err(ExchangeHttpError::Timeout(super::config::format_duration(limit))))
    }

    async fn exchange_unbounded(&self, request: HttpRequest) -> Result<HttpResponse, ExchangeHttpError> {
        let (mut parts, body) = request.into_parts();
        let uri = parts.uri.clone();
        let no_host = || ExchangeHttpError::Host(uri.to_string());
        let authority = uri.authority().ok_or_else(no_host)?.clone();
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let name = ServerName::try_from(host.clone()).map_err(|_| no_host())?;
        let tcp = TcpStream::connect((host.as_str(), authority.port_u16().unwrap_or(443))).await?;
        let _ = tcp.set_nodelay(true);
        let tls = self.tls.connect(name, tcp).await?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "token endpoint connection ended");
            }
        });
        // HTTP/1.1 sends the origin form and names the host in `Host`.
        parts.uri = uri
            .path_and_query()
            .map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone()));
        if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
            parts.headers.insert(header::HOST, host);
        }
        let response = sender
            .send_request(Request::from_parts(parts, Full::new(Bytes::from(body))))
            .await?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| ExchangeHttpError::Body(e.to_string()))?
            .to_bytes();
        Ok(Response::from_parts(parts, body.to_vec()))
    }
}

fn read_trimmed(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let text = text.trim_end_matches(['\r', '\n']);
    if text.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(text.to_owned())
}

/// The token endpoint's own words for a refusal (`invalid_client: …`), else the chain of causes.
fn request_error_text<RE: std::error::Error + 'static, T: oauth2::ErrorResponse + 'static>(
    error: &oauth2::RequestTokenError<RE, T>,
) -> String {
    super::error_text::chain(error)
}
