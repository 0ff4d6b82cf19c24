//! A minimal HTTP/1 keep-alive client on hyper's connection API: one connection per caller, no
//! pool, no proxy, nothing between the measurement and the socket.

use std::net::SocketAddr;

use anyhow::Context;
use bytes::Bytes;
use http::header::{AUTHORIZATION, HOST};
use http::{HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

/// The credentials path pods call.
pub const CREDENTIALS_PATH: &str = "/v1/credentials";

/// Where to send requests and what they carry: the `Host` the agent accepts and the pod's token.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub host: HeaderValue,
    pub token: Option<HeaderValue>,
}

impl Target {
    pub fn new(addr: SocketAddr, token: Option<&str>) -> anyhow::Result<Self> {
        Ok(Self {
            addr,
            host: HeaderValue::from_str(&addr.to_string())?,
            token: token
                .map(HeaderValue::from_str)
                .transpose()
                .context("token is not a valid header value")?,
        })
    }

    /// The same target with another token.
    pub fn with_token(&self, token: &str) -> anyhow::Result<Self> {
        Ok(Self {
            token: Some(HeaderValue::from_str(token)?),
            ..self.clone()
        })
    }

    /// `GET path` with `Host` and, if set, `Authorization: <token>`.
    pub fn request(&self, path: &str) -> Request<Empty<Bytes>> {
        let mut req = Request::new(Empty::new());
        *req.uri_mut() = http::Uri::try_from(path).unwrap_or_default();
        req.headers_mut().insert(HOST, self.host.clone());
        if let Some(token) = &self.token {
            req.headers_mut().insert(AUTHORIZATION, token.clone());
        }
        req
    }
}

/// One keep-alive connection.
#[derive(Debug)]
pub struct Connection {
    sender: Option<SendRequest<Empty<Bytes>>>,
}

impl Connection {
    /// A connection that is not connected (and reports itself closed).
    pub fn placeholder() -> Self {
        Self { sender: None }
    }

    /// Whether the connection is gone (closed by the server, broken, or never opened).
    pub fn is_closed(&self) -> bool {
        self.sender.as_ref().is_none_or(SendRequest::is_closed)
    }

    /// Connect (with `TCP_NODELAY`, as the agent sets on its side) and hand the connection's
    /// driver to the runtime.
    pub async fn open(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .with_context(|| format!("HTTP/1 handshake with {addr}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self {
            sender: Some(sender),
        })
    }

    /// Send one request and read the whole answer.
    pub async fn send(
        &mut self,
        req: Request<Empty<Bytes>>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let sender = self.sender.as_mut().context("not connected")?;
        sender.ready().await?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

/// One request on a fresh connection.
pub async fn get_once(target: &Target, path: &str) -> anyhow::Result<(StatusCode, Bytes)> {
    let mut conn = Connection::open(target.addr).await?;
    conn.send(target.request(path))
        .await
        .with_context(|| format!("GET http://{}{path}", target.addr))
}
