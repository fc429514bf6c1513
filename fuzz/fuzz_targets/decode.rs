//! decode -> encode -> decode: anything that decodes must re-encode to the
//! same octets and decode to the same value.
#![no_main]
use libfuzzer_sys::fuzz_target;
use lq6_proto::{pretty, Message};

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::decode(data) {
        let bytes = m.to_vec().expect("a decoded message re-encodes");
        assert_eq!(bytes, data);
        assert_eq!(Message::decode(&bytes).expect("re-decodes"), m);
        assert_eq!(m.wire_len(), data.len());
        let _ = pretty::tree(&m);
    }
});
