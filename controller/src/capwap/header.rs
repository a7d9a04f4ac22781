//! The preamble and the CAPWAP header (RFC 5415 §4.1–§4.3).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! |Version| Type  |  HLEN   |   RID   | WBID    |T|F|L|W|M|K|Flags|
//! |          Fragment ID          |     Frag Offset         |Rsvd |
//! |                 (optional) Radio MAC Address                  |
//! |            (optional) Wireless Specific Information           |
//! ```
//!
//! HLEN counts 4-byte words including the optional fields; each optional field is a length
//! byte and that many bytes, padded to a 4-byte boundary. [`Header::encode`] computes HLEN;
//! [`Header::decode`] checks that it matches the optional fields exactly. Reserved bits are
//! written as zero and ignored on receipt (§4.3: "Receivers MUST ignore all bits not defined
//! for the version of the protocol they support").
//!
//! A preamble of type 1 announces the CAPWAP DTLS header (§4.2). DTLS is not implemented:
//! [`preamble`] tells the two apart so a DTLS layer can later be put in front of this codec,
//! and [`Header::decode`] refuses DTLS with its own error, [`HeaderError::Dtls`].

use super::reader::{Reader, pad4};

/// The only CAPWAP version (§4.1).
pub const CAPWAP_VERSION: u8 = 0;
/// The fixed part of the header; also the smallest possible header (HLEN 2).
pub const HEADER_MIN_LEN: usize = 8;
/// HLEN is 5 bits of 4-byte words.
pub const HEADER_MAX_LEN: usize = 31 * 4;
/// The CAPWAP DTLS header: preamble (type 1) and 24 reserved bits (§4.2).
pub const DTLS_HEADER_LEN: usize = 4;
/// Wireless Binding Identifier for IEEE 802.11 (§4.3).
pub const WBID_IEEE_80211: u8 = 1;
/// Wireless Binding Identifier for EPCGlobal (§4.3).
pub const WBID_EPCGLOBAL: u8 = 3;
/// RID and WBID are 5-bit fields.
pub const MAX_FIVE_BIT: u8 = 31;
/// Fragment Offset is 13 bits, in units of 8 bytes.
pub const MAX_FRAGMENT_OFFSET: u16 = 0x1fff;

const FLAG_T: u32 = 1 << 8;
const FLAG_F: u32 = 1 << 7;
const FLAG_L: u32 = 1 << 6;
const FLAG_W: u32 = 1 << 5;
const FLAG_M: u32 = 1 << 4;
const FLAG_K: u32 = 1 << 3;

/// What follows the preamble (§4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreambleType {
    /// Type 0: a clear-text CAPWAP header.
    Capwap,
    /// Type 1: a CAPWAP DTLS header and a DTLS record.
    Dtls,
}

/// Why bytes are not a CAPWAP header, or why a [`Header`] cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// Fewer bytes than the header needs.
    #[error("datagram too short for a CAPWAP header: {len} bytes, {needed} needed")]
    TooShort {
        /// Bytes available.
        len: usize,
        /// Bytes the header needs.
        needed: usize,
    },
    /// A version other than 0.
    #[error("unsupported CAPWAP version {version}")]
    UnsupportedVersion {
        /// The version nibble.
        version: u8,
    },
    /// A DTLS-protected datagram (preamble type 1); DTLS is not implemented.
    #[error("DTLS-protected datagram (preamble type 1); DTLS is not supported")]
    Dtls,
    /// A preamble type other than 0 or 1.
    #[error("unknown preamble type {kind}")]
    UnknownPreambleType {
        /// The type nibble.
        kind: u8,
    },
    /// HLEN below 2 words.
    #[error("HLEN {hlen} is below the minimum of 2 words")]
    HlenTooSmall {
        /// The HLEN field.
        hlen: u8,
    },
    /// HLEN disagrees with the optional fields the flags announce.
    #[error("HLEN says {declared} bytes but the header's fields take {actual}")]
    HlenMismatch {
        /// HLEN × 4.
        declared: usize,
        /// The length the fixed part and the optional fields need.
        actual: usize,
    },
    /// A Radio MAC Address that is neither EUI-48 nor EUI-64.
    #[error("Radio MAC Address length {len} is neither 6 (EUI-48) nor 8 (EUI-64)")]
    RadioMacLength {
        /// The length byte.
        len: u8,
    },
    /// Encoding: RID or WBID above 31.
    #[error("{field} {value} does not fit in 5 bits")]
    FieldTooLarge {
        /// "RID" or "WBID".
        field: &'static str,
        /// The value.
        value: u8,
    },
    /// Encoding: a fragment offset above 8191 units.
    #[error("fragment offset {offset} units does not fit in 13 bits")]
    FragmentOffsetTooLarge {
        /// The offset in 8-byte units.
        offset: u16,
    },
    /// Encoding: Wireless Specific Information longer than its length byte allows.
    #[error("Wireless Specific Information of {len} bytes is longer than 255")]
    WirelessInfoTooLong {
        /// Its length.
        len: usize,
    },
    /// Encoding: the optional fields push the header past 124 bytes (HLEN 31).
    #[error("header of {len} bytes is longer than HLEN can express (124)")]
    TooLong {
        /// The header's length.
        len: usize,
    },
}

/// Reads the preamble (§4.1): version 0, then type 0 (CAPWAP header) or 1 (DTLS).
pub fn preamble(datagram: &[u8]) -> Result<PreambleType, HeaderError> {
    let Some(&first) = datagram.first() else {
        return Err(HeaderError::TooShort { len: 0, needed: 1 });
    };
    let version = first >> 4;
    if version != CAPWAP_VERSION {
        return Err(HeaderError::UnsupportedVersion { version });
    }
    match first & 0x0f {
        0 => Ok(PreambleType::Capwap),
        1 => Ok(PreambleType::Dtls),
        kind => Err(HeaderError::UnknownPreambleType { kind }),
    }
}

/// The optional Radio MAC Address (M bit): EUI-48 or EUI-64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RadioMac {
    /// A 6-byte MAC address.
    Eui48([u8; 6]),
    /// An 8-byte EUI-64.
    Eui64([u8; 8]),
}

impl RadioMac {
    /// The address bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            RadioMac::Eui48(a) => a,
            RadioMac::Eui64(a) => a,
        }
    }
}

/// The fragment fields of a fragment (F bit set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fragment {
    /// Fragment ID: the same for every fragment of one message.
    pub id: u16,
    /// Offset of this fragment's payload in the reassembled payload, in units of 8 bytes.
    pub offset: u16,
    /// L bit: the last fragment.
    pub last: bool,
}

impl Fragment {
    /// The offset in bytes.
    pub fn byte_offset(&self) -> usize {
        usize::from(self.offset) * 8
    }
}

/// A CAPWAP header (§4.3), borrowing the Wireless Specific Information from the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    /// RID: the radio the packet is about (5 bits).
    pub radio_id: u8,
    /// WBID: the wireless binding (5 bits; 1 = IEEE 802.11).
    pub wbid: u8,
    /// T bit: the payload is in the binding's native frame format.
    pub native_frame: bool,
    /// K bit: a data channel keep-alive.
    pub keep_alive: bool,
    /// F, L, Fragment ID and Fragment Offset; `None` when F is clear (the other fields are
    /// then written as zero and ignored on receipt).
    pub fragment: Option<Fragment>,
    /// M bit and the Radio MAC Address.
    pub radio_mac: Option<RadioMac>,
    /// W bit and the Wireless Specific Information (at most 255 bytes).
    pub wireless_info: Option<&'a [u8]>,
}

impl Header<'static> {
    /// The header control messages carry: HLEN 2, RID 0, WBID 1 (IEEE 802.11), no flags.
    /// Encodes as `00 10 02 00 00 00 00 00`.
    pub const CONTROL: Header<'static> = Header {
        radio_id: 0,
        wbid: WBID_IEEE_80211,
        native_frame: false,
        keep_alive: false,
        fragment: None,
        radio_mac: None,
        wireless_info: None,
    };
}

impl<'a> Header<'a> {
    /// The encoded length: 8 bytes plus the padded optional fields.
    pub fn encoded_len(&self) -> usize {
        HEADER_MIN_LEN
            + self.radio_mac.map_or(0, |m| pad4(1 + m.as_bytes().len()))
            + self.wireless_info.map_or(0, |w| pad4(1 + w.len()))
    }

    /// Appends the header to `out`, computing HLEN from the optional fields.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), HeaderError> {
        for (field, value) in [("RID", self.radio_id), ("WBID", self.wbid)] {
            if value > MAX_FIVE_BIT {
                return Err(HeaderError::FieldTooLarge { field, value });
            }
        }
        if let Some(w) = self.wireless_info
            && w.len() > usize::from(u8::MAX)
        {
            return Err(HeaderError::WirelessInfoTooLong { len: w.len() });
        }
        let len = self.encoded_len();
        if len > HEADER_MAX_LEN {
            return Err(HeaderError::TooLong { len });
        }
        let mut word0 =
            (len as u32 / 4) << 19 | u32::from(self.radio_id) << 14 | u32::from(self.wbid) << 9;
        let mut word1 = 0u32;
        if self.native_frame {
            word0 |= FLAG_T;
        }
        if self.keep_alive {
            word0 |= FLAG_K;
        }
        if let Some(f) = self.fragment {
            if f.offset > MAX_FRAGMENT_OFFSET {
                return Err(HeaderError::FragmentOffsetTooLarge { offset: f.offset });
            }
            word0 |= FLAG_F;
            if f.last {
                word0 |= FLAG_L;
            }
            word1 = u32::from(f.id) << 16 | u32::from(f.offset) << 3;
        }
        if self.radio_mac.is_some() {
            word0 |= FLAG_M;
        }
        if self.wireless_info.is_some() {
            word0 |= FLAG_W;
        }
        out.reserve(len);
        out.extend_from_slice(&word0.to_be_bytes());
        out.extend_from_slice(&word1.to_be_bytes());
        if let Some(m) = self.radio_mac {
            push_padded(out, m.as_bytes());
        }
        if let Some(w) = self.wireless_info {
            push_padded(out, w);
        }
        Ok(())
    }

    /// Decodes the header at the start of `datagram`; returns it and the payload after it.
    pub fn decode(datagram: &'a [u8]) -> Result<(Header<'a>, &'a [u8]), HeaderError> {
        if preamble(datagram)? == PreambleType::Dtls {
            return Err(HeaderError::Dtls);
        }
        let mut r = Reader::new(datagram);
        let (Some(word0), Some(word1)) = (r.u32(), r.u32()) else {
            return Err(HeaderError::TooShort {
                len: datagram.len(),
                needed: HEADER_MIN_LEN,
            });
        };
        let hlen = ((word0 >> 19) & 0x1f) as u8;
        if hlen < 2 {
            return Err(HeaderError::HlenTooSmall { hlen });
        }
        let declared = usize::from(hlen) * 4;
        if datagram.len() < declared {
            return Err(HeaderError::TooShort {
                len: datagram.len(),
                needed: declared,
            });
        }
        let fragment = (word0 & FLAG_F != 0).then_some(Fragment {
            id: (word1 >> 16) as u16,
            offset: ((word1 >> 3) & u32::from(MAX_FRAGMENT_OFFSET)) as u16,
            last: word0 & FLAG_L != 0,
        });
        // Optional fields are read only within HLEN.
        let mut opt = Reader::new(datagram.get(HEADER_MIN_LEN..declared).unwrap_or_default());
        let mismatch = |actual| HeaderError::HlenMismatch { declared, actual };
        let radio_mac = if word0 & FLAG_M != 0 {
            let len = opt.u8().ok_or(mismatch(HEADER_MIN_LEN + 4))?;
            let mac = match len {
                6 => opt.array().map(RadioMac::Eui48),
                8 => opt.array().map(RadioMac::Eui64),
                _ => return Err(HeaderError::RadioMacLength { len }),
            };
            let field = pad4(1 + usize::from(len));
            let padded = opt.take(field - 1 - usize::from(len));
            let (Some(mac), Some(_)) = (mac, padded) else {
                return Err(mismatch(HEADER_MIN_LEN + field));
            };
            Some(mac)
        } else {
            None
        };
        let wireless_info = if word0 & FLAG_W != 0 {
            let at = HEADER_MIN_LEN + opt.pos();
            let len = usize::from(opt.u8().ok_or(mismatch(at + 4))?);
            let field = pad4(1 + len);
            let data = opt.take(len);
            let padded = opt.take(field - 1 - len);
            let (Some(data), Some(_)) = (data, padded) else {
                return Err(mismatch(at + field));
            };
            Some(data)
        } else {
            None
        };
        if !opt.is_empty() {
            return Err(mismatch(HEADER_MIN_LEN + opt.pos()));
        }
        let header = Header {
            radio_id: ((word0 >> 14) & 0x1f) as u8,
            wbid: ((word0 >> 9) & 0x1f) as u8,
            native_frame: word0 & FLAG_T != 0,
            keep_alive: word0 & FLAG_K != 0,
            fragment,
            radio_mac,
            wireless_info,
        };
        Ok((header, datagram.get(declared..).unwrap_or_default()))
    }
}

fn push_padded(out: &mut Vec<u8>, data: &[u8]) {
    let start = out.len();
    out.push(data.len() as u8);
    out.extend_from_slice(data);
    out.resize(start + pad4(1 + data.len()), 0);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn control_header_is_the_reference_bytes() {
        let mut out = Vec::new();
        Header::CONTROL.encode(&mut out).unwrap();
        assert_eq!(out, [0x00, 0x10, 0x02, 0x00, 0, 0, 0, 0]);
        let (h, rest) = Header::decode(&out).unwrap();
        assert_eq!(h, Header::CONTROL);
        assert!(rest.is_empty());
    }

    #[test]
    fn every_field_lands_on_its_bits() {
        // RID 5, WBID 1, T and K, fragment id 0xBEEF at 3 units, last; EUI-48 radio MAC and
        // 2 bytes of wireless info: HLEN = (8 + 8 + 4) / 4 = 5.
        let h = Header {
            radio_id: 5,
            wbid: 1,
            native_frame: true,
            keep_alive: true,
            fragment: Some(Fragment {
                id: 0xbeef,
                offset: 3,
                last: true,
            }),
            radio_mac: Some(RadioMac::Eui48([1, 2, 3, 4, 5, 6])),
            wireless_info: Some(&[0xaa, 0xbb]),
        };
        let mut out = Vec::new();
        h.encode(&mut out).unwrap();
        #[rustfmt::skip]
        let want = [
            // version 0 type 0 | HLEN 5, RID 5 (00101) | WBID 1, T | F L . M K ...
            0x00, 0b0010_1001, 0b0100_0011, 0b1111_1000,
            0xbe, 0xef, 0x00, 3 << 3,
            6, 1, 2, 3, 4, 5, 6, 0,
            2, 0xaa, 0xbb, 0,
        ];
        assert_eq!(out, want);
        assert_eq!(h.encoded_len(), 20);
        let (back, rest) = Header::decode(&out).unwrap();
        assert_eq!(back, h);
        assert!(rest.is_empty());
        assert_eq!(back.fragment.unwrap().byte_offset(), 24);
    }

    #[test]
    fn dtls_preamble_is_its_own_error() {
        let dtls = [0x01, 0, 0, 0, 0x16, 0xfe, 0xfd];
        assert_eq!(preamble(&dtls), Ok(PreambleType::Dtls));
        assert_eq!(Header::decode(&dtls), Err(HeaderError::Dtls));
        assert_eq!(
            Header::decode(&[0x10, 0x10, 2, 0, 0, 0, 0, 0]),
            Err(HeaderError::UnsupportedVersion { version: 1 })
        );
        assert_eq!(
            preamble(&[0x02]),
            Err(HeaderError::UnknownPreambleType { kind: 2 })
        );
        assert_eq!(
            preamble(&[]),
            Err(HeaderError::TooShort { len: 0, needed: 1 })
        );
    }

    #[test]
    fn hlen_must_match_the_optional_fields() {
        // HLEN 3 with no optional field.
        let bad = [0x00, 0x18, 0x02, 0x00, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            Header::decode(&bad),
            Err(HeaderError::HlenMismatch {
                declared: 12,
                actual: 8
            })
        );
        // HLEN 2 but M set: the MAC has no room.
        let bad = [0x00, 0x10, 0x02, 0x10, 0, 0, 0, 0, 6, 1, 2, 3];
        assert_eq!(
            Header::decode(&bad),
            Err(HeaderError::HlenMismatch {
                declared: 8,
                actual: 12
            })
        );
        // HLEN 1.
        assert_eq!(
            Header::decode(&[0x00, 0x08, 0x02, 0x00, 0, 0, 0, 0]),
            Err(HeaderError::HlenTooSmall { hlen: 1 })
        );
        // HLEN 4 with M set and a 7-byte "MAC".
        let bad = [0x00, 0x20, 0x02, 0x10, 0, 0, 0, 0, 7, 1, 2, 3, 4, 5, 6, 7];
        assert_eq!(
            Header::decode(&bad),
            Err(HeaderError::RadioMacLength { len: 7 })
        );
        // HLEN past the datagram.
        assert_eq!(
            Header::decode(&[0x00, 0x18, 0x02, 0x00, 0, 0, 0, 0]),
            Err(HeaderError::TooShort { len: 8, needed: 12 })
        );
    }

    #[test]
    fn reserved_bits_are_ignored_and_not_fragment_fields_dropped() {
        // Reserved flag bits, reserved offset bits, and L/ID/offset without F.
        let odd = [0x00, 0x10, 0x02, 0x47, 0x12, 0x34, 0x00, 0x0f, 0xaa];
        let (h, rest) = Header::decode(&odd).unwrap();
        assert_eq!(h, Header::CONTROL);
        assert_eq!(rest, [0xaa]);
    }

    #[test]
    fn encode_refuses_what_the_wire_cannot_hold() {
        let mut out = Vec::new();
        let h = Header {
            radio_id: 32,
            ..Header::CONTROL
        };
        assert!(matches!(
            h.encode(&mut out),
            Err(HeaderError::FieldTooLarge { field: "RID", .. })
        ));
        let big = [0u8; 300];
        let h = Header {
            wireless_info: Some(&big[..120]),
            ..Header::CONTROL
        };
        assert_eq!(h.encode(&mut out), Err(HeaderError::TooLong { len: 132 }));
        let h = Header {
            wireless_info: Some(&big),
            ..Header::CONTROL
        };
        assert_eq!(
            h.encode(&mut out),
            Err(HeaderError::WirelessInfoTooLong { len: 300 })
        );
        let h = Header {
            fragment: Some(Fragment {
                id: 1,
                offset: 0x2000,
                last: false,
            }),
            ..Header::CONTROL
        };
        assert_eq!(
            h.encode(&mut out),
            Err(HeaderError::FragmentOffsetTooLarge { offset: 0x2000 })
        );
        assert!(out.is_empty(), "nothing written on failure");
    }

    /// A header whose Wireless Specific Information is owned, for proptest.
    #[derive(Debug, Clone)]
    pub(crate) struct OwnedHeader {
        fixed: Header<'static>,
        wireless_info: Option<Vec<u8>>,
    }

    impl OwnedHeader {
        pub(crate) fn header(&self) -> Header<'_> {
            Header {
                wireless_info: self.wireless_info.as_deref(),
                ..self.fixed
            }
        }
    }

    /// Any valid header; fragment fields only when `fragments` is true.
    pub(crate) fn any_header(fragments: bool) -> impl Strategy<Value = OwnedHeader> {
        let fragment = proptest::option::of(
            (any::<u16>(), 0..=MAX_FRAGMENT_OFFSET, any::<bool>())
                .prop_map(|(id, offset, last)| Fragment { id, offset, last }),
        )
        .prop_map(move |f| f.filter(|_| fragments));
        let mac = proptest::option::of(prop_oneof![
            any::<[u8; 6]>().prop_map(RadioMac::Eui48),
            any::<[u8; 8]>().prop_map(RadioMac::Eui64),
        ]);
        let wireless_info = proptest::option::of(proptest::collection::vec(any::<u8>(), 0..100));
        (
            (0..=31u8, 0..=31u8, any::<bool>(), any::<bool>()),
            fragment,
            mac,
            wireless_info,
        )
            .prop_map(
                |(
                    (radio_id, wbid, native_frame, keep_alive),
                    fragment,
                    radio_mac,
                    wireless_info,
                )| {
                    OwnedHeader {
                        fixed: Header {
                            radio_id,
                            wbid,
                            native_frame,
                            keep_alive,
                            fragment,
                            radio_mac,
                            wireless_info: None,
                        },
                        wireless_info,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn header_round_trips(
            owned in any_header(true),
            payload in proptest::collection::vec(any::<u8>(), 0..16),
        ) {
            let h = owned.header();
            let mut out = Vec::new();
            h.encode(&mut out).unwrap();
            prop_assert_eq!(out.len(), h.encoded_len());
            prop_assert_eq!(out.len() % 4, 0);
            out.extend_from_slice(&payload);
            let (back, rest) = Header::decode(&out).unwrap();
            prop_assert_eq!(back, h);
            prop_assert_eq!(rest, &payload[..]);
        }

        #[test]
        fn header_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = preamble(&bytes);
            if let Ok((h, _)) = Header::decode(&bytes) {
                let mut out = Vec::new();
                h.encode(&mut out).unwrap();
                prop_assert_eq!(Header::decode(&out).unwrap().0, h);
            }
        }
    }
}
