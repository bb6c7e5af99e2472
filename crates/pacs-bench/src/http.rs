//! A minimal HTTP/1.1 client over one kept-alive TCP connection.
//!
//! Benchmarks need to know exactly which connection carries a request and when the first body
//! byte arrives; a general client hides both. Plain HTTP to a loopback server is all the
//! harness talks, so this is all it implements: Content-Length and chunked bodies,
//! keep-alive, and reconnecting when the server closed the connection.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// `http://host:port/prefix` split into its parts.
#[derive(Clone, Debug)]
pub struct BaseUrl {
    pub authority: String,
    pub prefix: String,
}

impl BaseUrl {
    pub fn parse(url: &str) -> Result<BaseUrl> {
        let rest = url
            .strip_prefix("http://")
            .with_context(|| format!("only http:// URLs are supported: {url}"))?;
        let (authority, prefix) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        Ok(BaseUrl {
            authority: authority.to_string(),
            prefix: prefix.to_string(),
        })
    }

    pub fn path(&self, tail: &str) -> String {
        format!("{}{}", self.prefix, tail)
    }
}

/// What came back, with its timings.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// The body, when the caller asked to keep it.
    pub body: Vec<u8>,
    pub body_len: u64,
    /// From the start of the request to the first body byte (to the end of the headers when
    /// the body is empty).
    pub first_byte: Duration,
    pub total: Duration,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body).context("response body is not JSON")
    }
}

/// One HTTP connection (opened lazily, reopened after the server closes it).
pub struct Client {
    authority: String,
    conn: Option<BufReader<TcpStream>>,
    timeout: Duration,
}

impl Client {
    pub fn new(base: &BaseUrl) -> Client {
        Client {
            authority: base.authority.clone(),
            conn: None,
            timeout: Duration::from_secs(600),
        }
    }

    pub fn get(&mut self, path: &str, accept: &str, keep_body: bool) -> Result<Response> {
        self.request("GET", path, &[("Accept", accept)], &[], keep_body)
    }

    /// Sends one request and reads the whole response; the body is kept only if asked
    /// (otherwise only counted).
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        keep_body: bool,
    ) -> Result<Response> {
        // A kept-alive connection may have been closed by the server while idle: one retry on
        // a fresh connection, only when nothing at all came back.
        match self.try_request(method, path, headers, body, keep_body) {
            Ok(r) => Ok(r),
            Err(RequestError::Stale(_)) => {
                self.conn = None;
                self.try_request(method, path, headers, body, keep_body)
                    .map_err(RequestError::into_anyhow)
            }
            Err(e) => {
                self.conn = None;
                Err(e.into_anyhow())
            }
        }
    }

    fn try_request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        keep_body: bool,
    ) -> Result<Response, RequestError> {
        let reused = self.conn.is_some();
        if self.conn.is_none() {
            let stream = TcpStream::connect(&self.authority)
                .with_context(|| format!("connecting to {}", self.authority))
                .map_err(RequestError::Other)?;
            let _ = stream.set_nodelay(true);
            let _ = stream.set_read_timeout(Some(self.timeout));
            let _ = stream.set_write_timeout(Some(self.timeout));
            self.conn = Some(BufReader::with_capacity(256 * 1024, stream));
        }
        let conn = self.conn.as_mut().expect("connection just opened");
        let start = Instant::now();
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.authority);
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() || method == "POST" || method == "PUT" {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let sent = conn
            .get_mut()
            .write_all(head.as_bytes())
            .and_then(|()| conn.get_mut().write_all(body));
        if let Err(e) = sent {
            return Err(if reused {
                RequestError::Stale(e.into())
            } else {
                RequestError::Other(e.into())
            });
        }

        let mut line = String::new();
        match conn.read_line(&mut line) {
            Ok(0) if reused => return Err(RequestError::Stale(anyhow::anyhow!("connection closed"))),
            Ok(0) => return Err(RequestError::Other(anyhow::anyhow!("connection closed"))),
            Err(e) if reused => return Err(RequestError::Stale(e.into())),
            Err(e) => return Err(RequestError::Other(e.into())),
            Ok(_) => {}
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line {line:?}"))
            .map_err(RequestError::Other)?;
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            conn.read_line(&mut h)
                .map_err(|e| RequestError::Other(e.into()))?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let find = |name: &str| {
            headers
                .iter()
                .find(|(k, _): &&(String, String)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let chunked = find("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let length: Option<u64> = find("content-length").and_then(|v| v.parse().ok());
        let close = find("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let no_body = method == "HEAD" || status == 204 || status == 304 || (100..200).contains(&status);

        let mut sink = BodySink {
            keep: keep_body,
            body: Vec::new(),
            len: 0,
            first_byte: None,
            start,
        };
        let result = if no_body {
            Ok(())
        } else if chunked {
            read_chunked(conn, &mut sink)
        } else if let Some(n) = length {
            read_exact_len(conn, n, &mut sink)
        } else {
            read_to_close(conn, &mut sink)
        };
        result.map_err(RequestError::Other)?;
        if close || (!chunked && length.is_none() && !no_body) {
            self.conn = None;
        }
        let total = start.elapsed();
        Ok(Response {
            status,
            body: sink.body,
            body_len: sink.len,
            first_byte: sink.first_byte.unwrap_or(total),
            total,
        })
    }
}

enum RequestError {
    /// The reused connection was dead before any response byte: retry once.
    Stale(anyhow::Error),
    Other(anyhow::Error),
}

impl RequestError {
    fn into_anyhow(self) -> anyhow::Error {
        match self {
            RequestError::Stale(e) | RequestError::Other(e) => e,
        }
    }
}

struct BodySink {
    keep: bool,
    body: Vec<u8>,
    len: u64,
    first_byte: Option<Duration>,
    start: Instant,
}

impl BodySink {
    fn take(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if self.first_byte.is_none() {
            self.first_byte = Some(self.start.elapsed());
        }
        self.len += data.len() as u64;
        if self.keep {
            self.body.extend_from_slice(data);
        }
    }
}

fn read_exact_len(conn: &mut BufReader<TcpStream>, mut n: u64, sink: &mut BodySink) -> Result<()> {
    while n > 0 {
        let buf = conn.fill_buf()?;
        if buf.is_empty() {
            bail!("connection closed with {n} body bytes missing");
        }
        let take = buf.len().min(usize::try_from(n).unwrap_or(usize::MAX));
        sink.take(&buf[..take]);
        conn.consume(take);
        n -= take as u64;
    }
    Ok(())
}

fn read_chunked(conn: &mut BufReader<TcpStream>, sink: &mut BodySink) -> Result<()> {
    loop {
        let mut size_line = String::new();
        conn.read_line(&mut size_line)?;
        let size_hex = size_line.trim().split(';').next().unwrap_or("");
        let size = u64::from_str_radix(size_hex, 16)
            .with_context(|| format!("bad chunk size line {size_line:?}"))?;
        if size == 0 {
            // Trailers, then the empty line.
            loop {
                let mut t = String::new();
                if conn.read_line(&mut t)? == 0 || t.trim().is_empty() {
                    return Ok(());
                }
            }
        }
        read_exact_len(conn, size, sink)?;
        let mut crlf = [0u8; 2];
        conn.read_exact(&mut crlf)?;
    }
}

fn read_to_close(conn: &mut BufReader<TcpStream>, sink: &mut BodySink) -> Result<()> {
    loop {
        let buf = conn.fill_buf()?;
        if buf.is_empty() {
            return Ok(());
        }
        let n = buf.len();
        sink.take(buf);
        conn.consume(n);
    }
}

/// Percent-encodes a query value (everything but unreserved characters and `*`).
pub fn encode_query_value(v: &str) -> String {
    let mut out = String::new();
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~*".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
