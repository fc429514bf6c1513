//! Encoding helpers over a caller-owned `Vec<u8>`. Option lengths are
//! back-patched after the body is written, so nested TLVs (IA_NA, CLIENT_DATA,
//! RELAY_MSG, ...) need no size pre-pass and no per-option allocation.
//!
//! The bulk responder uses [`OptionWriter`] directly to build LEASEQUERY-DATA
//! messages from store records without materialising a typed message.

use crate::error::EncodeError;
use std::net::Ipv6Addr;

/// Appends DHCPv6 fields and TLVs to a reusable buffer.
pub struct OptionWriter<'a> {
    buf: &'a mut Vec<u8>,
}

/// The position of an open option whose length is not yet written.
#[must_use = "an opened option must be closed with OptionWriter::close"]
pub struct OpenOption {
    code: u16,
    len_at: usize,
}

impl<'a> OptionWriter<'a> {
    pub fn new(buf: &'a mut Vec<u8>) -> Self {
        OptionWriter { buf }
    }

    pub fn buf(&mut self) -> &mut Vec<u8> {
        self.buf
    }

    #[inline]
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    #[inline]
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    #[inline]
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }
    #[inline]
    pub fn addr(&mut self, a: &Ipv6Addr) {
        self.buf.extend_from_slice(&a.octets());
    }
    #[inline]
    pub fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }

    /// Client/server header: msg-type and 24-bit transaction-id (RFC 8415 §8).
    pub fn client_header(&mut self, msg_type: u8, xid: u32) -> Result<(), EncodeError> {
        if xid > 0x00ff_ffff {
            return Err(EncodeError::XidTooLarge(xid));
        }
        let x = xid.to_be_bytes();
        self.buf.extend_from_slice(&[msg_type, x[1], x[2], x[3]]);
        Ok(())
    }

    /// Starts option `code`; its length is written by [`Self::close`].
    #[inline]
    pub fn open(&mut self, code: u16) -> OpenOption {
        self.u16(code);
        let len_at = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        OpenOption { code, len_at }
    }

    #[inline]
    pub fn close(&mut self, o: OpenOption) -> Result<(), EncodeError> {
        let len = self.buf.len() - o.len_at - 2;
        if len > u16::MAX as usize {
            return Err(EncodeError::OptionTooLong { code: o.code, len });
        }
        self.buf[o.len_at..o.len_at + 2].copy_from_slice(&(len as u16).to_be_bytes());
        Ok(())
    }

    /// A whole option whose body is already in wire form.
    #[inline]
    pub fn option(&mut self, code: u16, body: &[u8]) -> Result<(), EncodeError> {
        if body.len() > u16::MAX as usize {
            return Err(EncodeError::OptionTooLong {
                code,
                len: body.len(),
            });
        }
        self.u16(code);
        self.u16(body.len() as u16);
        self.bytes(body);
        Ok(())
    }

    #[inline]
    pub fn option_u32(&mut self, code: u16, v: u32) {
        self.u16(code);
        self.u16(4);
        self.u32(v);
    }
}

/// Appends one RFC 5460 §5.1 frame (`message-size(2)` then the message) to
/// `buf`, letting `body` write the message; the size is back-patched. Works
/// without tokio so responders can batch many frames into one write.
pub fn write_framed(
    buf: &mut Vec<u8>,
    body: impl FnOnce(&mut Vec<u8>) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    let at = buf.len();
    buf.extend_from_slice(&[0, 0]);
    if let Err(e) = body(buf) {
        buf.truncate(at);
        return Err(e);
    }
    let len = buf.len() - at - 2;
    if len > u16::MAX as usize {
        buf.truncate(at);
        return Err(EncodeError::FrameTooLong(len));
    }
    buf[at..at + 2].copy_from_slice(&(len as u16).to_be_bytes());
    Ok(())
}
