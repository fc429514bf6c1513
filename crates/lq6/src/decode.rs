//! `lq6 decode HEX`: decode one message and print it as a tree.

use anyhow::{bail, Context};
use lq6_proto::duid::parse_hex;
use lq6_proto::Message;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct DecodeArgs {
    /// The message in hex (spaces and colons allowed). With --tcp, a 2-octet
    /// RFC 5460 message-size prefix comes first.
    #[arg(required = true, num_args = 1..)]
    hex: Vec<String>,
    /// The input carries the RFC 5460 §5.1 TCP length prefix.
    #[arg(long)]
    tcp: bool,
}

pub fn run(a: DecodeArgs) -> anyhow::Result<ExitCode> {
    let text: String = a
        .hex
        .concat()
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ':')
        .collect();
    let mut bytes = parse_hex(&text).context("input is not hex")?;
    if a.tcp {
        if bytes.len() < 2 {
            bail!("too short for a TCP message-size prefix");
        }
        let size = u16::from_be_bytes([bytes[0], bytes[1]]) as usize;
        if size != bytes.len() - 2 {
            bail!(
                "message-size says {size} octets but {} follow",
                bytes.len() - 2
            );
        }
        bytes.drain(..2);
    }
    let m = Message::decode(&bytes).context("not a valid DHCPv6 message")?;
    print!("{}", lq6_proto::pretty::tree(&m));
    Ok(ExitCode::SUCCESS)
}
