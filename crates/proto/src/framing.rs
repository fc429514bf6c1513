//! RFC 5460 §5.1 TCP framing: every message is preceded by a 2-octet
//! message-size that counts the octets after it. The decoder never reserves
//! more than one frame of at most `max_len` octets, so a peer that announces
//! a large frame and sends nothing costs no memory beyond that bound.

use crate::error::EncodeError;
use crate::message::Message;
use bytes::{Buf, BufMut, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// The protocol maximum (the size field is 16 bits).
pub const MAX_FRAME: usize = u16::MAX as usize;
/// A DHCPv6 message is at least msg-type plus transaction-id.
pub const MIN_FRAME: usize = 4;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FramingError {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {size} octets exceeds the configured maximum of {max}")]
    TooLarge { size: usize, max: usize },
    #[error("frame of {0} octets is shorter than a DHCPv6 header")]
    TooShort(usize),
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

/// Length-prefixed DHCPv6 frames. Decodes to the message octets (without
/// the size field); encodes typed messages or pre-encoded octets.
#[derive(Debug, Clone, Copy)]
pub struct LqFrameCodec {
    max_len: usize,
}

impl LqFrameCodec {
    /// `max_len` is clamped to 4..=65535.
    pub fn new(max_len: usize) -> Self {
        LqFrameCodec {
            max_len: max_len.clamp(MIN_FRAME, MAX_FRAME),
        }
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }
}

impl Default for LqFrameCodec {
    fn default() -> Self {
        Self::new(MAX_FRAME)
    }
}

impl Decoder for LqFrameCodec {
    type Item = BytesMut;
    type Error = FramingError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, FramingError> {
        if src.len() < 2 {
            return Ok(None);
        }
        let size = u16::from_be_bytes([src[0], src[1]]) as usize;
        if size > self.max_len {
            return Err(FramingError::TooLarge {
                size,
                max: self.max_len,
            });
        }
        if size < MIN_FRAME {
            return Err(FramingError::TooShort(size));
        }
        if src.len() < 2 + size {
            src.reserve(2 + size - src.len());
            return Ok(None);
        }
        src.advance(2);
        Ok(Some(src.split_to(size)))
    }
}

impl Encoder<&Message> for LqFrameCodec {
    type Error = FramingError;

    fn encode(&mut self, m: &Message, dst: &mut BytesMut) -> Result<(), FramingError> {
        let len = m.wire_len();
        if len > self.max_len {
            return Err(FramingError::Encode(EncodeError::FrameTooLong(len)));
        }
        let mut v = Vec::with_capacity(len);
        m.encode(&mut v)?;
        dst.reserve(2 + v.len());
        dst.put_u16(v.len() as u16);
        dst.extend_from_slice(&v);
        Ok(())
    }
}

impl Encoder<&[u8]> for LqFrameCodec {
    type Error = FramingError;

    fn encode(&mut self, m: &[u8], dst: &mut BytesMut) -> Result<(), FramingError> {
        if m.len() > self.max_len {
            return Err(FramingError::Encode(EncodeError::FrameTooLong(m.len())));
        }
        dst.reserve(2 + m.len());
        dst.put_u16(m.len() as u16);
        dst.extend_from_slice(m);
        Ok(())
    }
}
