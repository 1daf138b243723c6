//! A minimal protobuf encoder for the few fixed etcd/raft messages a restore writes.
//!
//! Why not prost: these messages are gogo-generated proto2 with non-nullable fields, which
//! emit zero values (`08 00 10 00`) that prost's proto3-style optional fields would omit, and
//! the files must be byte-identical to etcd's. Fields are written in field-number order, as
//! gogo's marshaller does.

#[derive(Default)]
pub struct Buf(pub Vec<u8>);

impl Buf {
    pub fn varint(&mut self, mut v: u64) -> &mut Self {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
        self
    }
    /// Field `n` as a varint (wire type 0), always emitted.
    pub fn uint(&mut self, n: u32, v: u64) -> &mut Self {
        self.varint((n as u64) << 3).varint(v)
    }
    /// Field `n` as length-delimited bytes (wire type 2).
    pub fn bytes(&mut self, n: u32, b: &[u8]) -> &mut Self {
        self.varint(((n as u64) << 3) | 2).varint(b.len() as u64);
        self.0.extend_from_slice(b);
        self
    }
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.0)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn varints() {
        let mut b = super::Buf::default();
        b.uint(1, 0).uint(2, 300).bytes(3, b"ab");
        assert_eq!(b.0, vec![0x08, 0x00, 0x10, 0xac, 0x02, 0x1a, 2, b'a', b'b']);
    }
}
