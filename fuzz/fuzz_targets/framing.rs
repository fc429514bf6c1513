//! The RFC 5460 framing decoder fed arbitrary chunks: it never panics,
//! never yields a frame above the limit, and never buffers past one frame.
#![no_main]
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use lq6_proto::framing::LqFrameCodec;
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let Some((&max, rest)) = data.split_first() else { return };
    let max = 4 + max as usize * 16;
    let mut codec = LqFrameCodec::new(max);
    let mut buf = BytesMut::new();
    for chunk in rest.chunks(7) {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(f)) => {
                    assert!(f.len() <= max && f.len() >= 4);
                    let _ = lq6_proto::Message::decode(&f);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(buf.len() <= 2 + max + 7);
    }
});
