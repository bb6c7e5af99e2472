//! The HTTP listener, plain or TLS, with the bounds that keep idle or slow connections from
//! holding the server: at most `max_connections` at once (more are closed as soon as they are
//! accepted), request headers (and the TLS handshake, and the first request) within
//! `header_timeout` — which also ends a keep-alive connection left idle that long — and request
//! bodies at a minimum rate ([`crate::body_rate`]).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::body_rate::BodyRate;

/// A certificate chain and private key, both PEM, for serving HTTPS.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

/// How the listener treats connections; built by the binary from its configuration.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Serve HTTPS with these when given.
    pub tls: Option<TlsFiles>,
    /// Time for a request's headers to arrive, counted from when the connection starts waiting
    /// for a request (so it also closes idle keep-alive connections); bounds the TLS handshake
    /// and the first request too.
    pub header_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
    pub body_rate: BodyRate,
    /// How long shutdown waits for requests in flight.
    pub shutdown_grace: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            tls: None,
            header_timeout: Duration::from_secs(10),
            max_connections: 1024,
            body_rate: BodyRate::default(),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// Serves `router` until `shutdown` turns true, then finishes requests in flight (at most
/// `shutdown_grace`).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
    config: ServeConfig,
) -> io::Result<()> {
    let mut router = crate::body_rate::layer(router, config.body_rate);
    if config.tls.is_some() {
        // Over TLS, browsers are told to come back over TLS only (a year; HSTS, RFC 6797).
        router = router.layer(axum::middleware::map_response(
            |mut response: axum::response::Response| async {
                response.headers_mut().insert(
                    axum::http::header::STRICT_TRANSPORT_SECURITY,
                    axum::http::HeaderValue::from_static("max-age=31536000"),
                );
                response
            },
        ));
    }
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    let handle = axum_server::Handle::<SocketAddr>::new();
    let stopper = handle.clone();
    let grace = config.shutdown_grace;
    tokio::spawn(async move {
        let _ = shutdown.wait_for(|s| *s).await;
        stopper.graceful_shutdown(Some(grace));
    });
    let capped = CappedAcceptor {
        limit: Arc::new(Semaphore::new(config.max_connections.max(1))),
    };
    let mut server = axum_server::from_tcp(listener.into_std()?)?
        .handle(handle)
        .first_request_timeout(config.header_timeout);
    server
        .http_builder()
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(config.header_timeout);
    match &config.tls {
        None => server.acceptor(capped).serve(service).await,
        Some(tls) => {
            let rustls = axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.cert, &tls.key).await?;
            let acceptor = axum_server::tls_rustls::RustlsAcceptor::new(rustls)
                .handshake_timeout(config.header_timeout)
                .acceptor(capped);
            server.acceptor(acceptor).serve(service).await
        }
    }
}

/// Takes one of `limit`'s permits for each connection, before any TLS handshake, and holds it
/// as long as the connection lives; a connection over the limit is closed at once.
#[derive(Clone)]
struct CappedAcceptor {
    limit: Arc<Semaphore>,
}

impl<S: Send + 'static> Accept<TcpStream, S> for CappedAcceptor {
    type Stream = Permitted;
    type Service = S;
    type Future = Pin<Box<dyn Future<Output = io::Result<(Permitted, S)>> + Send>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let permit = self.limit.clone().try_acquire_owned();
        Box::pin(async move {
            let Ok(permit) = permit else {
                metrics::counter!(crate::http_metrics::CONNECTIONS_REFUSED, "reason" => "limit").increment(1);
                tracing::debug!(peer = ?stream.peer_addr().ok(), "HTTP connection refused: too many open");
                return Err(io::Error::other("too many HTTP connections"));
            };
            let _ = stream.set_nodelay(true);
            Ok((
                Permitted {
                    stream,
                    _permit: permit,
                },
                service,
            ))
        })
    }
}

/// A connection that holds a permit of the connection limit.
struct Permitted {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for Permitted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Permitted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
