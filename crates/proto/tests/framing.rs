//! RFC 5460 §5.1 framing through the tokio-util codec.

use bytes::BytesMut;
use lq6_proto::framing::{FramingError, LqFrameCodec};
use lq6_proto::*;
use tokio_util::codec::{Decoder, Encoder};

fn done(xid: u32) -> Message {
    Message::Client(ClientMessage {
        msg_type: MessageType::LEASEQUERY_DONE,
        xid,
        options: vec![DhcpOption::StatusCode(StatusCode::new(Status::Success, ""))],
    })
}

#[test]
fn frames_split_and_joined() {
    let mut c = LqFrameCodec::default();
    let mut wire = BytesMut::new();
    c.encode(&done(1), &mut wire).unwrap();
    c.encode(&done(2), &mut wire).unwrap();
    assert_eq!(&wire[..2], &[0, 10]);
    // Feed one octet at a time: nothing until a frame is whole.
    let mut rx = BytesMut::new();
    let mut got = Vec::new();
    for b in wire.iter() {
        rx.extend_from_slice(&[*b]);
        while let Some(f) = c.decode(&mut rx).unwrap() {
            got.push(Message::decode(&f).unwrap());
        }
    }
    assert_eq!(got, vec![done(1), done(2)]);
    assert!(rx.is_empty());
}

#[test]
fn oversized_and_undersized_frames_are_errors() {
    let mut c = LqFrameCodec::new(100);
    let mut rx = BytesMut::from(&[0x01u8, 0x00][..]); // 256 > 100
    assert!(matches!(
        c.decode(&mut rx),
        Err(FramingError::TooLarge {
            size: 256,
            max: 100
        })
    ));
    let mut rx = BytesMut::from(&[0u8, 3, 16, 0, 0][..]);
    assert!(matches!(c.decode(&mut rx), Err(FramingError::TooShort(3))));
    // A size prefix with no data reserves at most one bounded frame.
    let mut c = LqFrameCodec::new(1000);
    let mut rx = BytesMut::from(&[0x03u8, 0xe8][..]);
    assert!(c.decode(&mut rx).unwrap().is_none());
    assert!(rx.capacity() <= 2 + 1000 + 64);
    // Encoding refuses a message above the limit.
    let big = Message::Client(ClientMessage {
        msg_type: MessageType::LEASEQUERY_DATA,
        xid: 1,
        options: vec![DhcpOption::InterfaceId(vec![0; 200])],
    });
    let mut out = BytesMut::new();
    assert!(LqFrameCodec::new(100).encode(&big, &mut out).is_err());
    assert!(out.is_empty());
}

#[test]
fn write_framed_rolls_back_on_error() {
    let mut buf = vec![9u8];
    let r = write_framed(&mut buf, |b| {
        b.extend_from_slice(&[1, 2, 3]);
        Err(EncodeError::Invalid("test"))
    });
    assert!(r.is_err());
    assert_eq!(buf, vec![9]);
}
