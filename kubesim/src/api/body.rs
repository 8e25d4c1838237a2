//! Response bodies: a full buffer or a stream of chunks (watch, log follow).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body::Frame;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::error::Status;

pub enum Body {
    Full(Option<Bytes>),
    Stream(mpsc::Receiver<Bytes>),
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match &mut *self {
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Stream(rx) => rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Full(None))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match self {
            Body::Full(Some(b)) => http_body::SizeHint::with_exact(b.len() as u64),
            Body::Full(None) => http_body::SizeHint::with_exact(0),
            Body::Stream(_) => http_body::SizeHint::default(),
        }
    }
}

pub type Resp = Response<Body>;

fn with_type(code: u16, ct: &'static str, body: Bytes) -> Resp {
    let mut r = Response::new(Body::Full(Some(body)));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut()
        .insert(http::header::CONTENT_TYPE, HeaderValue::from_static(ct));
    r
}

pub fn json(code: u16, v: &Value) -> Resp {
    with_type(code, "application/json", Bytes::from(v.to_string()))
}

pub fn json_typed(code: u16, ct: &'static str, v: &Value) -> Resp {
    with_type(code, ct, Bytes::from(v.to_string()))
}

pub fn text(code: u16, s: impl Into<Bytes>) -> Resp {
    with_type(code, "text/plain; charset=utf-8", s.into())
}

pub fn status(s: &Status) -> Resp {
    json(s.code, &s.to_json())
}

pub fn stream(ct: &'static str, rx: mpsc::Receiver<Bytes>) -> Resp {
    let mut r = Response::new(Body::Stream(rx));
    r.headers_mut()
        .insert(http::header::CONTENT_TYPE, HeaderValue::from_static(ct));
    r
}
