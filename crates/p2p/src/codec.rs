//! The request-response codec: length-prefixed CBOR (ciborium) with hard size limits.
//!
//! Each message on a stream is one frame: a 4-byte big-endian length, then that many bytes
//! of CBOR. The reader checks the length against its limit *before* reading the body, and
//! grows its buffer only as bytes actually arrive, so a peer can never make us allocate more
//! than the limit (nor the limit itself by merely announcing it).
//!
//! A responder whose encoded response exceeds its own limit sends the frame header
//! [`REFUSED_TOO_LARGE`] and no body, so the requester fails fast with
//! [`RequestError::TooLarge`](crate::RequestError::TooLarge) instead of a timeout.

use std::{fmt, io, marker::PhantomData, sync::Arc};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use serde::{Serialize, de::DeserializeOwned};
use tracing::{debug, warn};

use crate::stats::Counters;

/// The protocol name of murmur's request-response exchange.
pub const SYNC_PROTOCOL: StreamProtocol = StreamProtocol::new("/murmur/sync/1");

/// Frame header meaning "the sender refused to send this message: too large".
pub(crate) const REFUSED_TOO_LARGE: u32 = u32::MAX;

/// A codec failure, carried inside the `io::Error` that libp2p hands back so the swarm task
/// can turn it into a precise [`RequestError`](crate::RequestError).
#[derive(Debug)]
pub(crate) enum CodecError {
    /// A message exceeds a size limit.
    TooLarge(String),
    /// A message could not be encoded or decoded.
    Malformed(String),
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::TooLarge(s) => write!(f, "too large: {s}"),
            CodecError::Malformed(s) => write!(f, "malformed: {s}"),
        }
    }
}

impl std::error::Error for CodecError {}

impl CodecError {
    fn into_io(self) -> io::Error {
        let kind = match self {
            CodecError::TooLarge(_) => io::ErrorKind::InvalidData,
            CodecError::Malformed(_) => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, self)
    }

    /// The codec error inside an `io::Error`, if it came from this codec.
    pub(crate) fn from_io(e: &io::Error) -> Option<&CodecError> {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<CodecError>())
    }
}

/// Length-prefixed CBOR codec for requests of type `Req` and responses of type `Resp`.
pub struct CborCodec<Req, Resp> {
    max_request: usize,
    max_response: usize,
    counters: Arc<Counters>,
    _types: PhantomData<fn() -> (Req, Resp)>,
}

impl<Req, Resp> Clone for CborCodec<Req, Resp> {
    fn clone(&self) -> Self {
        Self {
            max_request: self.max_request,
            max_response: self.max_response,
            counters: Arc::clone(&self.counters),
            _types: PhantomData,
        }
    }
}

impl<Req, Resp> CborCodec<Req, Resp> {
    pub(crate) fn new(max_request: usize, max_response: usize, counters: Arc<Counters>) -> Self {
        Self {
            max_request,
            max_response,
            counters,
            _types: PhantomData,
        }
    }
}

/// Encodes `value` as a frame, or `None` with the size if it exceeds `max`.
fn encode_frame<T: Serialize>(value: &T, max: usize) -> Result<Vec<u8>, CodecError> {
    let mut frame = vec![0u8; 4];
    ciborium::into_writer(value, &mut frame).map_err(|e| CodecError::Malformed(e.to_string()))?;
    let body = frame.len() - 4;
    let header = u32::try_from(body)
        .ok()
        .filter(|len| *len != REFUSED_TOO_LARGE && body <= max)
        .ok_or_else(|| CodecError::TooLarge(format!("{body} bytes, limit {max}")))?;
    frame[..4].copy_from_slice(&header.to_be_bytes());
    Ok(frame)
}

/// Reads one frame of at most `max` body bytes and decodes it.
async fn read_frame<T, R>(io: &mut R, max: usize, counters: &Counters) -> io::Result<T>
where
    T: DeserializeOwned,
    R: AsyncRead + Unpin + Send,
{
    let mut header = [0u8; 4];
    io.read_exact(&mut header).await?;
    let len = u32::from_be_bytes(header);
    if len == REFUSED_TOO_LARGE {
        return Err(
            CodecError::TooLarge("the peer refused to send it (over its limit)".into()).into_io(),
        );
    }
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    if len > max {
        return Err(CodecError::TooLarge(format!("{len} bytes announced, limit {max}")).into_io());
    }
    // Grow as bytes arrive rather than trusting the announced length up front.
    let mut body = Vec::new();
    let wanted = u64::try_from(len).unwrap_or(u64::MAX);
    io.take(wanted).read_to_end(&mut body).await?;
    if body.len() != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("frame truncated: {} of {len} bytes", body.len()),
        ));
    }
    Counters::add(&counters.request_bytes_in, len + 4);
    ciborium::from_reader(body.as_slice())
        .map_err(|e| CodecError::Malformed(e.to_string()).into_io())
}

/// Reads one frame from `bytes` exactly as an inbound stream is read (length prefix, `max`
/// body bytes at most, CBOR body). For the fuzz targets; not part of the API.
#[doc(hidden)]
pub fn decode_frame<T: DeserializeOwned>(bytes: &[u8], max: usize) -> io::Result<T> {
    let counters = Counters::default();
    let mut io = futures::io::Cursor::new(bytes);
    futures::executor::block_on(read_frame(&mut io, max, &counters))
}

impl<Req, Resp> libp2p::request_response::Codec for CborCodec<Req, Resp>
where
    Req: Serialize + DeserializeOwned + Send,
    Resp: Serialize + DeserializeOwned + Send,
{
    type Protocol = StreamProtocol;
    type Request = Req;
    type Response = Resp;

    async fn read_request<T>(&mut self, _: &Self::Protocol, io: &mut T) -> io::Result<Req>
    where
        T: AsyncRead + Unpin + Send,
    {
        let result = read_frame(io, self.max_request, &self.counters).await;
        if let Err(e) = &result {
            Counters::inc(&self.counters.rejected_requests);
            match CodecError::from_io(e) {
                Some(c) => warn!(error = %c, "refused inbound request"),
                None => debug!(error = %e, "inbound request stream failed"),
            }
        }
        result
    }

    async fn read_response<T>(&mut self, _: &Self::Protocol, io: &mut T) -> io::Result<Resp>
    where
        T: AsyncRead + Unpin + Send,
    {
        let result = read_frame(io, self.max_response, &self.counters).await;
        if let Err(e) = &result
            && let Some(c) = CodecError::from_io(e)
        {
            Counters::inc(&self.counters.rejected_responses);
            warn!(error = %c, "refused response");
        }
        result
    }

    async fn write_request<T>(&mut self, _: &Self::Protocol, io: &mut T, req: Req) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let frame = encode_frame(&req, self.max_request).map_err(CodecError::into_io)?;
        io.write_all(&frame).await?;
        io.flush().await?;
        Counters::add(&self.counters.request_bytes_out, frame.len());
        Ok(())
    }

    async fn write_response<T>(
        &mut self,
        _: &Self::Protocol,
        io: &mut T,
        resp: Resp,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let frame = match encode_frame(&resp, self.max_response) {
            Ok(frame) => frame,
            Err(e) => {
                Counters::inc(&self.counters.rejected_responses);
                warn!(error = %e, "refusing to send a response");
                REFUSED_TOO_LARGE.to_be_bytes().to_vec()
            }
        };
        io.write_all(&frame).await?;
        io.flush().await?;
        Counters::add(&self.counters.request_bytes_out, frame.len());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::Cursor;
    use libp2p::request_response::Codec as _;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Msg {
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    }

    fn codec(max: usize) -> CborCodec<Msg, Msg> {
        CborCodec::new(max, max, Arc::new(Counters::default()))
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        futures::executor::block_on(f)
    }

    #[test]
    fn round_trip() {
        let mut c = codec(1024);
        let mut buf = Cursor::new(Vec::new());
        let msg = Msg { data: vec![7; 100] };
        block_on(c.write_request(&SYNC_PROTOCOL, &mut buf, Msg { data: vec![7; 100] }))
            .expect("write to memory");
        buf.set_position(0);
        let back = block_on(c.read_request(&SYNC_PROTOCOL, &mut buf)).expect("valid frame");
        assert_eq!(back, msg);
    }

    #[test]
    fn announced_length_over_limit_is_refused_without_reading() {
        let mut c = codec(1024);
        let mut bytes = 2000u32.to_be_bytes().to_vec();
        bytes.extend(std::iter::repeat_n(0u8, 10));
        let mut buf = Cursor::new(bytes);
        let err = block_on(c.read_request(&SYNC_PROTOCOL, &mut buf)).expect_err("oversized");
        assert!(matches!(
            CodecError::from_io(&err),
            Some(CodecError::TooLarge(_))
        ));
        assert_eq!(
            c.counters
                .rejected_requests
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    }

    #[test]
    fn garbage_and_truncation_are_errors() {
        let mut c = codec(1024);
        let mut bytes = 4u32.to_be_bytes().to_vec();
        bytes.extend([0xff, 0xff, 0xff, 0xff]);
        let mut buf = Cursor::new(bytes);
        let err = block_on(c.read_request(&SYNC_PROTOCOL, &mut buf)).expect_err("garbage");
        assert!(matches!(
            CodecError::from_io(&err),
            Some(CodecError::Malformed(_))
        ));

        let mut bytes = 100u32.to_be_bytes().to_vec();
        bytes.extend([1, 2, 3]);
        let mut buf = Cursor::new(bytes);
        let err = block_on(c.read_request(&SYNC_PROTOCOL, &mut buf)).expect_err("truncated");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn oversized_response_is_replaced_by_a_refusal() {
        let mut c = codec(64);
        let mut buf = Cursor::new(Vec::new());
        block_on(c.write_response(&SYNC_PROTOCOL, &mut buf, Msg { data: vec![1; 100] }))
            .expect("refusal written");
        assert_eq!(buf.get_ref().as_slice(), &REFUSED_TOO_LARGE.to_be_bytes());
        buf.set_position(0);
        let err = block_on(c.read_response(&SYNC_PROTOCOL, &mut buf)).expect_err("refused");
        assert!(matches!(
            CodecError::from_io(&err),
            Some(CodecError::TooLarge(_))
        ));
    }

    #[test]
    fn oversized_request_is_not_written() {
        let mut c = codec(64);
        let mut buf = Cursor::new(Vec::new());
        let err = block_on(c.write_request(&SYNC_PROTOCOL, &mut buf, Msg { data: vec![1; 100] }))
            .expect_err("too large");
        assert!(matches!(
            CodecError::from_io(&err),
            Some(CodecError::TooLarge(_))
        ));
        assert!(buf.get_ref().is_empty());
    }
}
