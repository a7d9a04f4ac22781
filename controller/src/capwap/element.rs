//! Message elements (RFC 5415 §4.6, RFC 5416 §6.25): the TLV framing and a typed
//! [`Element`] for the elements the controller and the AP simulator use.
//!
//! ```text
//! |          Type (16)            |         Length (16)           |  Value (Length bytes)...
//! ```
//!
//! Decoding borrows: names, image data, identifiers and sub-element lists are slices of the
//! datagram, so decoding an Image Data Request copies none of the image. Every length rule
//! the RFC gives is checked by one function, [`Element::check`], which decoding runs on what
//! it parsed and encoding runs before writing; so whatever decodes re-encodes, and encoding
//! never produces what the decoder would refuse.
//!
//! Deliberate leniencies, each documented where it applies:
//! - Image Data may carry more than the RFC's 1024 bytes (real controllers send 1377-byte
//!   blocks); the block-size limit belongs to the transfer, not the codec.
//! - Unknown sub-element types in WTP Board Data and WTP Descriptor are skipped (there is no
//!   RFC rule for them), so re-encoding drops them.
//! - Names and Location Data are byte strings (not checked as UTF-8) and may be empty.

use std::fmt;
use std::net::Ipv4Addr;

/// Type and Length in front of every value.
pub const ELEMENT_HEADER_LEN: usize = 4;
/// The RFC's maximum Image Data payload per message (§4.6.26). Not enforced by the codec.
pub const IMAGE_DATA_RFC_MAX: usize = 1024;
/// Image Identifier data is at most 1024 bytes (§4.6.27).
pub const IMAGE_IDENTIFIER_MAX: usize = 1024;
/// Vendor Specific Payload data is at most 2048 bytes (§4.6.39).
pub const VENDOR_DATA_MAX: usize = 2048;
/// AC Name and WTP Name are at most 512 bytes (§4.6.4, §4.6.45).
pub const NAME_MAX: usize = 512;
/// Location Data is at most 1024 bytes (§4.6.30).
pub const LOCATION_MAX: usize = 1024;
/// AC Information, Board Data and Descriptor sub-element data is at most 1024 bytes.
pub const SUB_ELEMENT_DATA_MAX: usize = 1024;

/// A message element type (§4.6; RFC 5416 for 1024–2047).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ElementType(pub u16);

macro_rules! element_types {
    ($($name:ident = $value:literal, $text:literal;)*) => {
        impl ElementType {
            $(
                #[doc = concat!($text, " (", stringify!($value), ").")]
                pub const $name: ElementType = ElementType($value);
            )*

            /// The RFC name of the type, when it is one this module knows.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $($value => Some($text),)*
                    _ => None,
                }
            }
        }
    };
}

element_types! {
    AC_DESCRIPTOR = 1, "AC Descriptor";
    AC_IPV4_LIST = 2, "AC IPv4 List";
    AC_IPV6_LIST = 3, "AC IPv6 List";
    AC_NAME = 4, "AC Name";
    AC_NAME_WITH_PRIORITY = 5, "AC Name with Priority";
    AC_TIMESTAMP = 6, "AC Timestamp";
    ADD_MAC_ACL_ENTRY = 7, "Add MAC ACL Entry";
    ADD_STATION = 8, "Add Station";
    CAPWAP_CONTROL_IPV4_ADDRESS = 10, "CAPWAP Control IPv4 Address";
    CAPWAP_CONTROL_IPV6_ADDRESS = 11, "CAPWAP Control IPv6 Address";
    CAPWAP_TIMERS = 12, "CAPWAP Timers";
    DATA_TRANSFER_DATA = 13, "Data Transfer Data";
    DATA_TRANSFER_MODE = 14, "Data Transfer Mode";
    DECRYPTION_ERROR_REPORT = 15, "Decryption Error Report";
    DECRYPTION_ERROR_REPORT_PERIOD = 16, "Decryption Error Report Period";
    DELETE_MAC_ACL_ENTRY = 17, "Delete MAC ACL Entry";
    DELETE_STATION = 18, "Delete Station";
    DISCOVERY_TYPE = 20, "Discovery Type";
    DUPLICATE_IPV4_ADDRESS = 21, "Duplicate IPv4 Address";
    DUPLICATE_IPV6_ADDRESS = 22, "Duplicate IPv6 Address";
    IDLE_TIMEOUT = 23, "Idle Timeout";
    IMAGE_DATA = 24, "Image Data";
    IMAGE_IDENTIFIER = 25, "Image Identifier";
    IMAGE_INFORMATION = 26, "Image Information";
    INITIATE_DOWNLOAD = 27, "Initiate Download";
    LOCATION_DATA = 28, "Location Data";
    MAXIMUM_MESSAGE_LENGTH = 29, "Maximum Message Length";
    CAPWAP_LOCAL_IPV4_ADDRESS = 30, "CAPWAP Local IPv4 Address";
    RADIO_ADMINISTRATIVE_STATE = 31, "Radio Administrative State";
    RADIO_OPERATIONAL_STATE = 32, "Radio Operational State";
    RESULT_CODE = 33, "Result Code";
    RETURNED_MESSAGE_ELEMENT = 34, "Returned Message Element";
    SESSION_ID = 35, "Session ID";
    STATISTICS_TIMER = 36, "Statistics Timer";
    VENDOR_SPECIFIC_PAYLOAD = 37, "Vendor Specific Payload";
    WTP_BOARD_DATA = 38, "WTP Board Data";
    WTP_DESCRIPTOR = 39, "WTP Descriptor";
    WTP_FALLBACK = 40, "WTP Fallback";
    WTP_FRAME_TUNNEL_MODE = 41, "WTP Frame Tunnel Mode";
    WTP_MAC_TYPE = 44, "WTP MAC Type";
    WTP_NAME = 45, "WTP Name";
    WTP_RADIO_STATISTICS = 47, "WTP Radio Statistics";
    WTP_REBOOT_STATISTICS = 48, "WTP Reboot Statistics";
    WTP_STATIC_IP_ADDRESS_INFORMATION = 49, "WTP Static IP Address Information";
    CAPWAP_LOCAL_IPV6_ADDRESS = 50, "CAPWAP Local IPv6 Address";
    CAPWAP_TRANSPORT_PROTOCOL = 51, "CAPWAP Transport Protocol";
    MTU_DISCOVERY_PADDING = 52, "MTU Discovery Padding";
    ECN_SUPPORT = 53, "ECN Support";
    WTP_RADIO_INFORMATION = 1048, "IEEE 802.11 WTP Radio Information";
}

impl fmt::Display for ElementType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} ({})", self.0),
            None => write!(f, "element type {}", self.0),
        }
    }
}

/// A Result Code (§4.6.35). The value sent on the wire; any `u32` is representable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResultCode(pub u32);

macro_rules! result_codes {
    ($($name:ident = $value:literal, $text:literal;)*) => {
        impl ResultCode {
            $(
                #[doc = concat!(stringify!($value), ": ", $text, ".")]
                pub const $name: ResultCode = ResultCode($value);
            )*

            /// The RFC's wording for the code.
            pub fn description(self) -> Option<&'static str> {
                match self.0 {
                    $($value => Some($text),)*
                    _ => None,
                }
            }
        }
    };
}

result_codes! {
    SUCCESS = 0, "Success";
    AC_LIST_REQUIRED = 1, "Failure (AC List Message Element MUST Be Present)";
    SUCCESS_NAT_DETECTED = 2, "Success (NAT Detected)";
    JOIN_FAILURE_UNSPECIFIED = 3, "Join Failure (Unspecified)";
    JOIN_FAILURE_RESOURCE_DEPLETION = 4, "Join Failure (Resource Depletion)";
    JOIN_FAILURE_UNKNOWN_SOURCE = 5, "Join Failure (Unknown Source)";
    JOIN_FAILURE_INCORRECT_DATA = 6, "Join Failure (Incorrect Data)";
    JOIN_FAILURE_SESSION_ID_IN_USE = 7, "Join Failure (Session ID Already in Use)";
    JOIN_FAILURE_HARDWARE_NOT_SUPPORTED = 8, "Join Failure (WTP Hardware Not Supported)";
    JOIN_FAILURE_BINDING_NOT_SUPPORTED = 9, "Join Failure (Binding Not Supported)";
    RESET_FAILURE_UNABLE_TO_RESET = 10, "Reset Failure (Unable to Reset)";
    RESET_FAILURE_FIRMWARE_WRITE_ERROR = 11, "Reset Failure (Firmware Write Error)";
    CONFIGURATION_FAILURE_SERVICE_PROVIDED = 12,
        "Configuration Failure (Unable to Apply Requested Configuration - Service Provided Anyhow)";
    CONFIGURATION_FAILURE_SERVICE_NOT_PROVIDED = 13,
        "Configuration Failure (Unable to Apply Requested Configuration - Service Not Provided)";
    IMAGE_DATA_INVALID_CHECKSUM = 14, "Image Data Error (Invalid Checksum)";
    IMAGE_DATA_INVALID_DATA_LENGTH = 15, "Image Data Error (Invalid Data Length)";
    IMAGE_DATA_OTHER_ERROR = 16, "Image Data Error (Other Error)";
    IMAGE_DATA_ALREADY_PRESENT = 17, "Image Data Error (Image Already Present)";
    INVALID_IN_CURRENT_STATE = 18, "Message Unexpected (Invalid in Current State)";
    UNRECOGNIZED_REQUEST = 19, "Message Unexpected (Unrecognized Request)";
    MISSING_MANDATORY_ELEMENT = 20, "Failure - Missing Mandatory Message Element";
    UNRECOGNIZED_ELEMENT = 21, "Failure - Unrecognized Message Element";
    DATA_TRANSFER_NO_INFORMATION = 22, "Data Transfer Error (No Information to Transfer)";
}

impl ResultCode {
    /// 0 (Success) and 2 (Success, NAT Detected).
    pub fn is_success(self) -> bool {
        matches!(self, ResultCode::SUCCESS | ResultCode::SUCCESS_NAT_DETECTED)
    }
}

impl fmt::Display for ResultCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.description() {
            Some(text) => write!(f, "{} {text}", self.0),
            None => write!(f, "{} (unknown result code)", self.0),
        }
    }
}

/// Why an element's value is malformed, or cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElementError {
    /// A fixed-size value of the wrong size.
    #[error("{element} value is {len} bytes; it must be {expected}")]
    WrongLength {
        /// The element.
        element: ElementType,
        /// The value's length.
        len: usize,
        /// The only valid length.
        expected: usize,
    },
    /// A value below the element's minimum length.
    #[error("{element} value is {len} bytes; it must be at least {min}")]
    TooShort {
        /// The element.
        element: ElementType,
        /// The value's length.
        len: usize,
        /// The minimum.
        min: usize,
    },
    /// A value (or a part of it) above its maximum length.
    #[error("{element} {what} is {len} bytes; at most {max} allowed")]
    TooLong {
        /// The element.
        element: ElementType,
        /// Which part: "value", "data", "name", a sub-element...
        what: &'static str,
        /// Its length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// Image Data with a Data Type other than 1, 2 or 5.
    #[error("Image Data type {data_type} is not 1 (data), 2 (EOF) or 5 (error)")]
    UnknownImageDataType {
        /// The Data Type byte.
        data_type: u8,
    },
    /// Image Data of type 5 (error) carrying data.
    #[error("Image Data of type 5 (error) carries {len} bytes; it must carry none")]
    ErrorWithData {
        /// The data's length.
        len: usize,
    },
    /// Image Identifier data that is not UTF-8.
    #[error("Image Identifier data is not UTF-8")]
    NotUtf8,
    /// WTP MAC Type other than 0, 1 or 2.
    #[error("WTP MAC Type {value} is not 0 (local), 1 (split) or 2 (both)")]
    UnknownMacType {
        /// The byte.
        value: u8,
    },
    /// ECN Support other than 0 or 1.
    #[error("ECN Support {value} is not 0 (limited) or 1 (full and limited)")]
    UnknownEcnSupport {
        /// The byte.
        value: u8,
    },
    /// A radio ID outside 1..=31 (RFC 5416 §6.25).
    #[error("radio ID {radio_id} is outside 1..=31")]
    RadioIdOutOfRange {
        /// The radio ID.
        radio_id: u8,
    },
    /// A sub-element that runs past the end of its element.
    #[error("{element}: sub-element at offset {offset} runs past the end of the value")]
    SubElementTruncated {
        /// The element.
        element: ElementType,
        /// Offset of the sub-element in the value.
        offset: usize,
    },
    /// The same sub-element type twice.
    #[error("{element}: sub-element type {sub_type} appears twice")]
    DuplicateSubElement {
        /// The element.
        element: ElementType,
        /// The sub-element type.
        sub_type: u16,
    },
    /// A mandatory sub-element is absent.
    #[error("{element}: mandatory sub-element type {sub_type} is missing")]
    MissingSubElement {
        /// The element.
        element: ElementType,
        /// The sub-element type.
        sub_type: u16,
    },
    /// WTP Descriptor with no encryption capability, or more than 255.
    #[error("WTP Descriptor has {count} encryption capabilities; 1 to 255 allowed")]
    EncryptionCount {
        /// The count.
        count: usize,
    },
    /// A WBID above 31 in an encryption capability.
    #[error("encryption capability WBID {wbid} does not fit in 5 bits")]
    WbidTooLarge {
        /// The WBID.
        wbid: u8,
    },
}

/// Image Data (24, §4.6.26): one block of an image, the last one, or an abort.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageData<'a> {
    /// Data Type 1: image data is included.
    Data(&'a [u8]),
    /// Data Type 2: the last block (EOF); it may carry data.
    Eof(&'a [u8]),
    /// Data Type 5: an error occurred, the transfer is aborted; carries no data.
    Error,
}

impl<'a> ImageData<'a> {
    /// The Data Type byte.
    pub fn data_type(&self) -> u8 {
        match self {
            ImageData::Data(_) => 1,
            ImageData::Eof(_) => 2,
            ImageData::Error => 5,
        }
    }

    /// The image bytes carried (empty for [`ImageData::Error`]).
    pub fn data(&self) -> &'a [u8] {
        match self {
            ImageData::Data(d) | ImageData::Eof(d) => d,
            ImageData::Error => &[],
        }
    }

    pub(crate) fn decode(value: &'a [u8]) -> Result<ImageData<'a>, ElementError> {
        let Some((&data_type, data)) = value.split_first() else {
            return Err(ElementError::TooShort {
                element: ElementType::IMAGE_DATA,
                len: 0,
                min: 1,
            });
        };
        match data_type {
            1 => Ok(ImageData::Data(data)),
            2 => Ok(ImageData::Eof(data)),
            5 if data.is_empty() => Ok(ImageData::Error),
            5 => Err(ElementError::ErrorWithData { len: data.len() }),
            _ => Err(ElementError::UnknownImageDataType { data_type }),
        }
    }
}

/// Image Identifier (25, §4.6.27): which image, as a vendor and a UTF-8 string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageIdentifier<'a> {
    /// IANA SMI Private Enterprise Number.
    pub vendor_id: u32,
    /// The identifier (1 to 1024 bytes of UTF-8, not NUL-terminated).
    pub data: &'a str,
}

/// Image Information (26, §4.6.28): the size and MD5 of the image about to be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageInformation {
    /// File size in bytes.
    pub file_size: u32,
    /// MD5 (RFC 1321) of the image.
    pub md5: [u8; 16],
}

/// Vendor Specific Payload (37, §4.6.39).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VendorSpecific<'a> {
    /// IANA SMI Private Enterprise Number.
    pub vendor_id: u32,
    /// The vendor's element ID.
    pub element_id: u16,
    /// 1 to 2048 bytes.
    pub data: &'a [u8],
}

/// CAPWAP Control IPv4 Address (10, §4.6.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlIpv4Address {
    /// The AC's control address.
    pub address: Ipv4Addr,
    /// WTPs currently joined on it.
    pub wtp_count: u16,
}

/// WTP MAC Type (44, §4.6.44).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MacType {
    /// 0: Local MAC.
    Local,
    /// 1: Split MAC.
    Split,
    /// 2: both.
    Both,
}

/// ECN Support (53, §4.6.25).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EcnSupport {
    /// 0: limited ECN support.
    Limited,
    /// 1: full and limited ECN support.
    FullAndLimited,
}

/// WTP Frame Tunnel Mode (41, §4.6.43): the bit field `Reserved(4) N E L U`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FrameTunnelMode(pub u8);

impl FrameTunnelMode {
    /// N: native frame tunnel mode.
    pub const NATIVE: u8 = 0x08;
    /// E: 802.3 frame tunnel mode.
    pub const IEEE_802_3: u8 = 0x04;
    /// L: local bridging.
    pub const LOCAL_BRIDGING: u8 = 0x02;
}

/// IEEE 802.11 WTP Radio Information (1048, RFC 5416 §6.25).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RadioInformation {
    /// Radio ID, 1..=31.
    pub radio_id: u8,
    /// Radio Type bits (see the constants).
    pub radio_type: u32,
}

impl RadioInformation {
    /// 802.11b.
    pub const TYPE_B: u32 = 0x01;
    /// 802.11a.
    pub const TYPE_A: u32 = 0x02;
    /// 802.11g.
    pub const TYPE_G: u32 = 0x04;
    /// 802.11n.
    pub const TYPE_N: u32 = 0x08;
}

/// One item of a [`SubElements`] list.
pub trait SubElement<'a>: Copy {
    /// Reads one item off the front of `input`; `None` when it is cut short.
    fn read(input: &mut &'a [u8]) -> Option<Self>;
    /// Its encoded length.
    fn encoded_len(&self) -> usize;
    /// Appends it.
    fn write(&self, out: &mut Vec<u8>);
}

/// A list of sub-elements: still on the wire after decoding (nothing copied or allocated),
/// or a slice the caller built for encoding. Both compare equal when their items do.
#[derive(Clone, Copy)]
pub struct SubElements<'a, T> {
    repr: Repr<'a, T>,
}

#[derive(Clone, Copy)]
enum Repr<'a, T> {
    /// Validated bytes.
    Wire(&'a [u8]),
    Items(&'a [T]),
}

impl<'a, T: SubElement<'a>> SubElements<'a, T> {
    /// A list of the caller's items.
    pub const fn new(items: &'a [T]) -> SubElements<'a, T> {
        SubElements {
            repr: Repr::Items(items),
        }
    }

    /// Validates `bytes` as a whole number of items.
    fn from_wire(bytes: &'a [u8], element: ElementType) -> Result<Self, ElementError> {
        let mut rest = bytes;
        while !rest.is_empty() {
            let offset = bytes.len() - rest.len();
            if T::read(&mut rest).is_none() {
                return Err(ElementError::SubElementTruncated { element, offset });
            }
        }
        Ok(SubElements {
            repr: Repr::Wire(bytes),
        })
    }

    /// The items in order.
    pub fn iter(&self) -> SubElementIter<'a, T> {
        match self.repr {
            Repr::Wire(bytes) => SubElementIter::Wire(bytes),
            Repr::Items(items) => SubElementIter::Items(items.iter()),
        }
    }

    /// The number of items.
    pub fn len(&self) -> usize {
        match self.repr {
            Repr::Wire(_) => self.iter().count(),
            Repr::Items(items) => items.len(),
        }
    }

    /// True when there is no item.
    pub fn is_empty(&self) -> bool {
        match self.repr {
            Repr::Wire(bytes) => bytes.is_empty(),
            Repr::Items(items) => items.is_empty(),
        }
    }

    fn encoded_len(&self) -> usize {
        match self.repr {
            Repr::Wire(bytes) => bytes.len(),
            Repr::Items(items) => items.iter().map(T::encoded_len).sum(),
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self.repr {
            Repr::Wire(bytes) => out.extend_from_slice(bytes),
            Repr::Items(items) => items.iter().for_each(|i| i.write(out)),
        }
    }
}

impl<'a, T: SubElement<'a> + PartialEq> PartialEq for SubElements<'a, T> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl<'a, T: SubElement<'a> + Eq> Eq for SubElements<'a, T> {}

impl<'a, T: SubElement<'a> + fmt::Debug> fmt::Debug for SubElements<'a, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Iterator over a [`SubElements`] list.
#[derive(Debug, Clone)]
pub enum SubElementIter<'a, T> {
    /// Reading validated bytes.
    Wire(&'a [u8]),
    /// Walking the caller's slice.
    Items(std::slice::Iter<'a, T>),
}

impl<'a, T: SubElement<'a>> Iterator for SubElementIter<'a, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        match self {
            // Validated on decode: a short tail cannot happen, and would just end the list.
            SubElementIter::Wire(rest) => T::read(rest),
            SubElementIter::Items(items) => items.next().copied(),
        }
    }
}

fn read_u16(input: &mut &[u8]) -> Option<u16> {
    let (head, rest) = input.split_first_chunk::<2>()?;
    *input = rest;
    Some(u16::from_be_bytes(*head))
}

fn read_u32(input: &mut &[u8]) -> Option<u32> {
    let (head, rest) = input.split_first_chunk::<4>()?;
    *input = rest;
    Some(u32::from_be_bytes(*head))
}

fn read_bytes<'a>(input: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let (head, rest) = input.split_at_checked(n)?;
    *input = rest;
    Some(head)
}

/// An AC Information sub-element of the AC Descriptor (§4.6.1): vendor, type, data.
/// RFC types are 4 (hardware version) and 5 (software version); Cisco controllers send 0 and
/// 1 and put the software version first, so the list keeps any type in the caller's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcInformation<'a> {
    /// IANA SMI Private Enterprise Number.
    pub vendor_id: u32,
    /// AC Information Type.
    pub kind: u16,
    /// At most 1024 bytes.
    pub data: &'a [u8],
}

impl AcInformation<'_> {
    /// AC Information Type for the hardware version.
    pub const HARDWARE_VERSION: u16 = 4;
    /// AC Information Type for the software version.
    pub const SOFTWARE_VERSION: u16 = 5;
}

impl<'a> SubElement<'a> for AcInformation<'a> {
    fn read(input: &mut &'a [u8]) -> Option<Self> {
        let vendor_id = read_u32(input)?;
        let kind = read_u16(input)?;
        let len = read_u16(input)?;
        let data = read_bytes(input, usize::from(len))?;
        Some(AcInformation {
            vendor_id,
            kind,
            data,
        })
    }

    fn encoded_len(&self) -> usize {
        8 + self.data.len()
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.vendor_id.to_be_bytes());
        out.extend_from_slice(&self.kind.to_be_bytes());
        out.extend_from_slice(&(self.data.len() as u16).to_be_bytes());
        out.extend_from_slice(self.data);
    }
}

/// AC Descriptor (1, §4.6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcDescriptor<'a> {
    /// Stations currently served.
    pub stations: u16,
    /// Station limit.
    pub station_limit: u16,
    /// WTPs currently joined.
    pub active_wtps: u16,
    /// WTP limit.
    pub max_wtps: u16,
    /// Security flags (0x04 pre-shared key, 0x02 X.509).
    pub security: u8,
    /// R-MAC Field (1 supported, 2 not supported).
    pub r_mac: u8,
    /// DTLS Policy flags (0x04 DTLS data channel, 0x02 clear data channel).
    pub dtls_policy: u8,
    /// AC Information sub-elements, in order.
    pub info: SubElements<'a, AcInformation<'a>>,
}

impl<'a> AcDescriptor<'a> {
    /// The first AC Information of type `kind`.
    pub fn info_of(&self, kind: u16) -> Option<AcInformation<'a>> {
        self.info.iter().find(|i| i.kind == kind)
    }
}

/// One encryption capability of the WTP Descriptor: `Resvd(3) WBID(5) | Capabilities(16)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncryptionCapability {
    /// Wireless binding (5 bits).
    pub wbid: u8,
    /// Binding-specific capability bits.
    pub capabilities: u16,
}

impl SubElement<'_> for EncryptionCapability {
    fn read(input: &mut &[u8]) -> Option<Self> {
        let (&[first, hi, lo], rest) = input.split_first_chunk::<3>()?;
        *input = rest;
        Some(EncryptionCapability {
            wbid: first & 0x1f,
            capabilities: u16::from_be_bytes([hi, lo]),
        })
    }

    fn encoded_len(&self) -> usize {
        3
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.push(self.wbid & 0x1f);
        out.extend_from_slice(&self.capabilities.to_be_bytes());
    }
}

/// A version in the WTP Descriptor: vendor and bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VendorVersion<'a> {
    /// IANA SMI Private Enterprise Number.
    pub vendor_id: u32,
    /// At most 1024 bytes.
    pub value: &'a [u8],
}

/// WTP Descriptor (39, §4.6.41).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WtpDescriptor<'a> {
    /// Radios the WTP supports.
    pub max_radios: u8,
    /// Radios in use.
    pub radios_in_use: u8,
    /// Encryption capabilities, 1 to 255.
    pub encryption: SubElements<'a, EncryptionCapability>,
    /// Descriptor type 0 (mandatory).
    pub hardware_version: VendorVersion<'a>,
    /// Descriptor type 1 (mandatory).
    pub active_software_version: VendorVersion<'a>,
    /// Descriptor type 2 (mandatory).
    pub boot_version: VendorVersion<'a>,
    /// Descriptor type 3.
    pub other_software_version: Option<VendorVersion<'a>>,
}

impl<'a> WtpDescriptor<'a> {
    fn versions(&self) -> impl Iterator<Item = (u16, VendorVersion<'a>)> {
        [
            (0, Some(self.hardware_version)),
            (1, Some(self.active_software_version)),
            (2, Some(self.boot_version)),
            (3, self.other_software_version),
        ]
        .into_iter()
        .filter_map(|(t, v)| Some((t, v?)))
    }
}

/// WTP Board Data (38, §4.6.40).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WtpBoardData<'a> {
    /// IANA SMI Private Enterprise Number.
    pub vendor_id: u32,
    /// Sub-element 0: WTP Model Number (mandatory).
    pub model: &'a [u8],
    /// Sub-element 1: WTP Serial Number (mandatory).
    pub serial: &'a [u8],
    /// Sub-element 2: Board ID.
    pub board_id: Option<&'a [u8]>,
    /// Sub-element 3: Board Revision.
    pub board_revision: Option<&'a [u8]>,
    /// Sub-element 4: Base MAC Address.
    pub base_mac: Option<&'a [u8]>,
}

impl<'a> WtpBoardData<'a> {
    fn items(&self) -> impl Iterator<Item = (u16, &'a [u8])> {
        [
            (0, Some(self.model)),
            (1, Some(self.serial)),
            (2, self.board_id),
            (3, self.board_revision),
            (4, self.base_mac),
        ]
        .into_iter()
        .filter_map(|(t, v)| Some((t, v?)))
    }
}

/// A message element, borrowing variable data from the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Element<'a> {
    /// AC Descriptor (1).
    AcDescriptor(AcDescriptor<'a>),
    /// AC Name (4): at most 512 bytes.
    AcName(&'a [u8]),
    /// CAPWAP Control IPv4 Address (10).
    ControlIpv4Address(ControlIpv4Address),
    /// Image Data (24).
    ImageData(ImageData<'a>),
    /// Image Identifier (25).
    ImageIdentifier(ImageIdentifier<'a>),
    /// Image Information (26).
    ImageInformation(ImageInformation),
    /// Initiate Download (27): no value.
    InitiateDownload,
    /// Location Data (28): at most 1024 bytes.
    LocationData(&'a [u8]),
    /// Maximum Message Length (29): the largest reassembled message the sender accepts.
    MaximumMessageLength(u16),
    /// CAPWAP Local IPv4 Address (30).
    LocalIpv4Address(Ipv4Addr),
    /// Result Code (33).
    ResultCode(ResultCode),
    /// Session ID (35): 16 bytes.
    SessionId([u8; 16]),
    /// Vendor Specific Payload (37).
    VendorSpecific(VendorSpecific<'a>),
    /// WTP Board Data (38).
    WtpBoardData(WtpBoardData<'a>),
    /// WTP Descriptor (39).
    WtpDescriptor(WtpDescriptor<'a>),
    /// WTP Frame Tunnel Mode (41).
    WtpFrameTunnelMode(FrameTunnelMode),
    /// WTP MAC Type (44).
    WtpMacType(MacType),
    /// WTP Name (45): at most 512 bytes.
    WtpName(&'a [u8]),
    /// ECN Support (53).
    EcnSupport(EcnSupport),
    /// IEEE 802.11 WTP Radio Information (1048).
    WtpRadioInformation(RadioInformation),
    /// Any element this codec does not model (it may still be an RFC element, such as AC
    /// IPv4 List). Encoding one whose type is modelled above makes bytes that decode as
    /// that variant instead.
    Unknown {
        /// The type.
        kind: ElementType,
        /// The raw value.
        value: &'a [u8],
    },
}

fn at_least(element: ElementType, len: usize, min: usize) -> Result<(), ElementError> {
    if len >= min {
        Ok(())
    } else {
        Err(ElementError::TooShort { element, len, min })
    }
}

fn at_most(
    element: ElementType,
    what: &'static str,
    len: usize,
    max: usize,
) -> Result<(), ElementError> {
    if len <= max {
        Ok(())
    } else {
        Err(ElementError::TooLong {
            element,
            what,
            len,
            max,
        })
    }
}

impl<'a> Element<'a> {
    /// The element's type.
    pub fn kind(&self) -> ElementType {
        match self {
            Element::AcDescriptor(_) => ElementType::AC_DESCRIPTOR,
            Element::AcName(_) => ElementType::AC_NAME,
            Element::ControlIpv4Address(_) => ElementType::CAPWAP_CONTROL_IPV4_ADDRESS,
            Element::ImageData(_) => ElementType::IMAGE_DATA,
            Element::ImageIdentifier(_) => ElementType::IMAGE_IDENTIFIER,
            Element::ImageInformation(_) => ElementType::IMAGE_INFORMATION,
            Element::InitiateDownload => ElementType::INITIATE_DOWNLOAD,
            Element::LocationData(_) => ElementType::LOCATION_DATA,
            Element::MaximumMessageLength(_) => ElementType::MAXIMUM_MESSAGE_LENGTH,
            Element::LocalIpv4Address(_) => ElementType::CAPWAP_LOCAL_IPV4_ADDRESS,
            Element::ResultCode(_) => ElementType::RESULT_CODE,
            Element::SessionId(_) => ElementType::SESSION_ID,
            Element::VendorSpecific(_) => ElementType::VENDOR_SPECIFIC_PAYLOAD,
            Element::WtpBoardData(_) => ElementType::WTP_BOARD_DATA,
            Element::WtpDescriptor(_) => ElementType::WTP_DESCRIPTOR,
            Element::WtpFrameTunnelMode(_) => ElementType::WTP_FRAME_TUNNEL_MODE,
            Element::WtpMacType(_) => ElementType::WTP_MAC_TYPE,
            Element::WtpName(_) => ElementType::WTP_NAME,
            Element::EcnSupport(_) => ElementType::ECN_SUPPORT,
            Element::WtpRadioInformation(_) => ElementType::WTP_RADIO_INFORMATION,
            Element::Unknown { kind, .. } => *kind,
        }
    }

    /// The length of the value (what the TLV's Length field says).
    pub fn value_len(&self) -> usize {
        match self {
            Element::AcDescriptor(d) => 12 + d.info.encoded_len(),
            Element::AcName(v) | Element::LocationData(v) | Element::WtpName(v) => v.len(),
            Element::ControlIpv4Address(_) => 6,
            Element::ImageData(d) => 1 + d.data().len(),
            Element::ImageIdentifier(i) => 4 + i.data.len(),
            Element::ImageInformation(_) => 20,
            Element::InitiateDownload => 0,
            Element::MaximumMessageLength(_) => 2,
            Element::LocalIpv4Address(_) => 4,
            Element::ResultCode(_) => 4,
            Element::SessionId(_) => 16,
            Element::VendorSpecific(v) => 6 + v.data.len(),
            Element::WtpBoardData(b) => 4 + b.items().map(|(_, v)| 4 + v.len()).sum::<usize>(),
            Element::WtpDescriptor(d) => {
                3 + d.encryption.encoded_len()
                    + d.versions().map(|(_, v)| 8 + v.value.len()).sum::<usize>()
            }
            Element::WtpFrameTunnelMode(_) | Element::WtpMacType(_) | Element::EcnSupport(_) => 1,
            Element::WtpRadioInformation(_) => 5,
            Element::Unknown { value, .. } => value.len(),
        }
    }

    /// The encoded length: TLV header and value.
    pub fn encoded_len(&self) -> usize {
        ELEMENT_HEADER_LEN + self.value_len()
    }

    /// Checks every length and range rule of the element's type — the same checks decoding
    /// applies, so anything that passes decodes back to an equal element.
    pub fn check(&self) -> Result<(), ElementError> {
        let kind = self.kind();
        match self {
            Element::AcDescriptor(d) => {
                for i in d.info.iter() {
                    at_most(kind, "AC Information", i.data.len(), SUB_ELEMENT_DATA_MAX)?;
                }
            }
            Element::AcName(n) | Element::WtpName(n) => at_most(kind, "name", n.len(), NAME_MAX)?,
            Element::LocationData(l) => at_most(kind, "value", l.len(), LOCATION_MAX)?,
            Element::ImageIdentifier(i) => {
                at_least(kind, self.value_len(), 5)?;
                at_most(kind, "data", i.data.len(), IMAGE_IDENTIFIER_MAX)?;
            }
            Element::VendorSpecific(v) => {
                at_least(kind, self.value_len(), 7)?;
                at_most(kind, "data", v.data.len(), VENDOR_DATA_MAX)?;
            }
            Element::WtpBoardData(b) => {
                for (_, v) in b.items() {
                    at_most(kind, "sub-element", v.len(), SUB_ELEMENT_DATA_MAX)?;
                }
                at_least(kind, self.value_len(), 14)?;
            }
            Element::WtpDescriptor(d) => {
                let count = d.encryption.len();
                if !(1..=255).contains(&count) {
                    return Err(ElementError::EncryptionCount { count });
                }
                if let Some(e) = d.encryption.iter().find(|e| e.wbid > 31) {
                    return Err(ElementError::WbidTooLarge { wbid: e.wbid });
                }
                for (_, v) in d.versions() {
                    at_most(kind, "descriptor", v.value.len(), SUB_ELEMENT_DATA_MAX)?;
                }
                at_least(kind, self.value_len(), 33)?;
            }
            Element::WtpRadioInformation(r) => {
                if !(1..=31).contains(&r.radio_id) {
                    return Err(ElementError::RadioIdOutOfRange {
                        radio_id: r.radio_id,
                    });
                }
            }
            Element::ControlIpv4Address(_)
            | Element::ImageData(_)
            | Element::ImageInformation(_)
            | Element::InitiateDownload
            | Element::MaximumMessageLength(_)
            | Element::LocalIpv4Address(_)
            | Element::ResultCode(_)
            | Element::SessionId(_)
            | Element::WtpFrameTunnelMode(_)
            | Element::WtpMacType(_)
            | Element::EcnSupport(_)
            | Element::Unknown { .. } => {}
        }
        at_most(kind, "value", self.value_len(), usize::from(u16::MAX))
    }

    /// Appends the TLV after [`Element::check`]ing it; nothing is written on error.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), ElementError> {
        self.check()?;
        let len = self.value_len();
        out.reserve(ELEMENT_HEADER_LEN + len);
        out.extend_from_slice(&self.kind().0.to_be_bytes());
        out.extend_from_slice(&(len as u16).to_be_bytes());
        match self {
            Element::AcDescriptor(d) => {
                for v in [d.stations, d.station_limit, d.active_wtps, d.max_wtps] {
                    out.extend_from_slice(&v.to_be_bytes());
                }
                out.extend_from_slice(&[d.security, d.r_mac, 0, d.dtls_policy]);
                d.info.write(out);
            }
            Element::AcName(v) | Element::LocationData(v) | Element::WtpName(v) => {
                out.extend_from_slice(v);
            }
            Element::ControlIpv4Address(c) => {
                out.extend_from_slice(&c.address.octets());
                out.extend_from_slice(&c.wtp_count.to_be_bytes());
            }
            Element::ImageData(d) => {
                out.push(d.data_type());
                out.extend_from_slice(d.data());
            }
            Element::ImageIdentifier(i) => {
                out.extend_from_slice(&i.vendor_id.to_be_bytes());
                out.extend_from_slice(i.data.as_bytes());
            }
            Element::ImageInformation(i) => {
                out.extend_from_slice(&i.file_size.to_be_bytes());
                out.extend_from_slice(&i.md5);
            }
            Element::InitiateDownload => {}
            Element::MaximumMessageLength(n) => out.extend_from_slice(&n.to_be_bytes()),
            Element::LocalIpv4Address(a) => out.extend_from_slice(&a.octets()),
            Element::ResultCode(c) => out.extend_from_slice(&c.0.to_be_bytes()),
            Element::SessionId(id) => out.extend_from_slice(id),
            Element::VendorSpecific(v) => {
                out.extend_from_slice(&v.vendor_id.to_be_bytes());
                out.extend_from_slice(&v.element_id.to_be_bytes());
                out.extend_from_slice(v.data);
            }
            Element::WtpBoardData(b) => {
                out.extend_from_slice(&b.vendor_id.to_be_bytes());
                for (t, v) in b.items() {
                    out.extend_from_slice(&t.to_be_bytes());
                    out.extend_from_slice(&(v.len() as u16).to_be_bytes());
                    out.extend_from_slice(v);
                }
            }
            Element::WtpDescriptor(d) => {
                out.extend_from_slice(&[d.max_radios, d.radios_in_use, d.encryption.len() as u8]);
                d.encryption.write(out);
                for (t, v) in d.versions() {
                    out.extend_from_slice(&v.vendor_id.to_be_bytes());
                    out.extend_from_slice(&t.to_be_bytes());
                    out.extend_from_slice(&(v.value.len() as u16).to_be_bytes());
                    out.extend_from_slice(v.value);
                }
            }
            Element::WtpFrameTunnelMode(m) => out.push(m.0),
            Element::WtpMacType(m) => out.push(match m {
                MacType::Local => 0,
                MacType::Split => 1,
                MacType::Both => 2,
            }),
            Element::EcnSupport(e) => out.push(match e {
                EcnSupport::Limited => 0,
                EcnSupport::FullAndLimited => 1,
            }),
            Element::WtpRadioInformation(r) => {
                out.push(r.radio_id);
                out.extend_from_slice(&r.radio_type.to_be_bytes());
            }
            Element::Unknown { value, .. } => out.extend_from_slice(value),
        }
        Ok(())
    }

    /// Decodes the value of an element of type `kind`. Types this codec does not model
    /// become [`Element::Unknown`].
    pub fn decode(kind: ElementType, value: &'a [u8]) -> Result<Element<'a>, ElementError> {
        let element = Element::parse(kind, value)?;
        element.check()?;
        Ok(element)
    }

    fn parse(kind: ElementType, value: &'a [u8]) -> Result<Element<'a>, ElementError> {
        Ok(match kind {
            ElementType::AC_DESCRIPTOR => {
                let Some((f, info)) = value.split_first_chunk::<12>() else {
                    return Err(ElementError::TooShort {
                        element: kind,
                        len: value.len(),
                        min: 12,
                    });
                };
                Element::AcDescriptor(AcDescriptor {
                    stations: u16::from_be_bytes([f[0], f[1]]),
                    station_limit: u16::from_be_bytes([f[2], f[3]]),
                    active_wtps: u16::from_be_bytes([f[4], f[5]]),
                    max_wtps: u16::from_be_bytes([f[6], f[7]]),
                    security: f[8],
                    r_mac: f[9],
                    // f[10] is Reserved1.
                    dtls_policy: f[11],
                    info: SubElements::from_wire(info, kind)?,
                })
            }
            ElementType::AC_NAME => Element::AcName(value),
            ElementType::CAPWAP_CONTROL_IPV4_ADDRESS => {
                let [a, b, c, d, hi, lo] = *fixed::<6>(kind, value)?;
                Element::ControlIpv4Address(ControlIpv4Address {
                    address: Ipv4Addr::new(a, b, c, d),
                    wtp_count: u16::from_be_bytes([hi, lo]),
                })
            }
            ElementType::IMAGE_DATA => Element::ImageData(ImageData::decode(value)?),
            ElementType::IMAGE_IDENTIFIER => {
                let Some((vendor, data)) = value.split_first_chunk::<4>() else {
                    return Err(ElementError::TooShort {
                        element: kind,
                        len: value.len(),
                        min: 5,
                    });
                };
                let data = std::str::from_utf8(data).map_err(|_| ElementError::NotUtf8)?;
                Element::ImageIdentifier(ImageIdentifier {
                    vendor_id: u32::from_be_bytes(*vendor),
                    data,
                })
            }
            ElementType::IMAGE_INFORMATION => {
                let [a, b, c, d, md5 @ ..] = *fixed::<20>(kind, value)?;
                Element::ImageInformation(ImageInformation {
                    file_size: u32::from_be_bytes([a, b, c, d]),
                    md5,
                })
            }
            ElementType::INITIATE_DOWNLOAD => {
                fixed::<0>(kind, value)?;
                Element::InitiateDownload
            }
            ElementType::LOCATION_DATA => Element::LocationData(value),
            ElementType::MAXIMUM_MESSAGE_LENGTH => {
                Element::MaximumMessageLength(u16::from_be_bytes(*fixed(kind, value)?))
            }
            ElementType::CAPWAP_LOCAL_IPV4_ADDRESS => {
                Element::LocalIpv4Address(Ipv4Addr::from(*fixed::<4>(kind, value)?))
            }
            ElementType::RESULT_CODE => {
                Element::ResultCode(ResultCode(u32::from_be_bytes(*fixed(kind, value)?)))
            }
            ElementType::SESSION_ID => Element::SessionId(*fixed(kind, value)?),
            ElementType::VENDOR_SPECIFIC_PAYLOAD => {
                let Some((head, data)) = value.split_first_chunk::<6>() else {
                    return Err(ElementError::TooShort {
                        element: kind,
                        len: value.len(),
                        min: 7,
                    });
                };
                let [a, b, c, d, hi, lo] = *head;
                Element::VendorSpecific(VendorSpecific {
                    vendor_id: u32::from_be_bytes([a, b, c, d]),
                    element_id: u16::from_be_bytes([hi, lo]),
                    data,
                })
            }
            ElementType::WTP_BOARD_DATA => Element::WtpBoardData(parse_board_data(value)?),
            ElementType::WTP_DESCRIPTOR => Element::WtpDescriptor(parse_wtp_descriptor(value)?),
            ElementType::WTP_FRAME_TUNNEL_MODE => {
                let [mode] = *fixed(kind, value)?;
                Element::WtpFrameTunnelMode(FrameTunnelMode(mode))
            }
            ElementType::WTP_MAC_TYPE => Element::WtpMacType(match *fixed(kind, value)? {
                [0] => MacType::Local,
                [1] => MacType::Split,
                [2] => MacType::Both,
                [value] => return Err(ElementError::UnknownMacType { value }),
            }),
            ElementType::WTP_NAME => Element::WtpName(value),
            ElementType::ECN_SUPPORT => Element::EcnSupport(match *fixed(kind, value)? {
                [0] => EcnSupport::Limited,
                [1] => EcnSupport::FullAndLimited,
                [value] => return Err(ElementError::UnknownEcnSupport { value }),
            }),
            ElementType::WTP_RADIO_INFORMATION => {
                let [radio_id, a, b, c, d] = *fixed(kind, value)?;
                Element::WtpRadioInformation(RadioInformation {
                    radio_id,
                    radio_type: u32::from_be_bytes([a, b, c, d]),
                })
            }
            _ => Element::Unknown { kind, value },
        })
    }
}

/// The value as an array of exactly `N` bytes.
fn fixed<const N: usize>(element: ElementType, value: &[u8]) -> Result<&[u8; N], ElementError> {
    value.try_into().map_err(|_| ElementError::WrongLength {
        element,
        len: value.len(),
        expected: N,
    })
}

/// A known sub-element type's vendor (0 where the format has none) and value.
type SubElementSlot<'a> = Option<(u32, &'a [u8])>;

/// Walks `{type u16, length u16, value}` sub-elements (WTP Board Data) or
/// `{vendor u32, type u16, length u16, value}` ones (WTP Descriptor), storing the known types
/// 0..slots.len() and skipping the others.
fn parse_typed_subelements<const N: usize>(
    element: ElementType,
    bytes: &[u8],
    offset_base: usize,
    with_vendor: bool,
) -> Result<[SubElementSlot<'_>; N], ElementError> {
    let mut slots = [None; N];
    let mut rest = bytes;
    while !rest.is_empty() {
        let offset = offset_base + bytes.len() - rest.len();
        let truncated = ElementError::SubElementTruncated { element, offset };
        let vendor = if with_vendor {
            read_u32(&mut rest).ok_or(truncated.clone())?
        } else {
            0
        };
        let sub_type = read_u16(&mut rest).ok_or(truncated.clone())?;
        let len = read_u16(&mut rest).ok_or(truncated.clone())?;
        let data = read_bytes(&mut rest, usize::from(len)).ok_or(truncated)?;
        if let Some(slot) = slots.get_mut(usize::from(sub_type)) {
            if slot.is_some() {
                return Err(ElementError::DuplicateSubElement { element, sub_type });
            }
            *slot = Some((vendor, data));
        }
    }
    Ok(slots)
}

fn parse_board_data(value: &[u8]) -> Result<WtpBoardData<'_>, ElementError> {
    let element = ElementType::WTP_BOARD_DATA;
    at_least(element, value.len(), 14)?;
    let mut v = value;
    let vendor_id =
        read_u32(&mut v).ok_or(ElementError::SubElementTruncated { element, offset: 0 })?;
    let [model, serial, board_id, board_revision, base_mac] =
        parse_typed_subelements::<5>(element, v, 4, false)?;
    let missing = |sub_type| ElementError::MissingSubElement { element, sub_type };
    Ok(WtpBoardData {
        vendor_id,
        model: model.ok_or(missing(0))?.1,
        serial: serial.ok_or(missing(1))?.1,
        board_id: board_id.map(|(_, d)| d),
        board_revision: board_revision.map(|(_, d)| d),
        base_mac: base_mac.map(|(_, d)| d),
    })
}

fn parse_wtp_descriptor(value: &[u8]) -> Result<WtpDescriptor<'_>, ElementError> {
    let element = ElementType::WTP_DESCRIPTOR;
    at_least(element, value.len(), 33)?;
    let (&[max_radios, radios_in_use, count], rest) = value
        .split_first_chunk::<3>()
        .ok_or(ElementError::SubElementTruncated { element, offset: 0 })?;
    if count == 0 {
        return Err(ElementError::EncryptionCount { count: 0 });
    }
    let (encryption, descriptors) = rest
        .split_at_checked(usize::from(count) * 3)
        .ok_or(ElementError::SubElementTruncated { element, offset: 3 })?;
    let encryption = SubElements::from_wire(encryption, element)?;
    let offset = 3 + usize::from(count) * 3;
    let [hw, sw, boot, other] = parse_typed_subelements::<4>(element, descriptors, offset, true)?;
    let to_version = |(vendor_id, value)| VendorVersion { vendor_id, value };
    let missing = |sub_type| ElementError::MissingSubElement { element, sub_type };
    Ok(WtpDescriptor {
        max_radios,
        radios_in_use,
        encryption,
        hardware_version: hw.map(to_version).ok_or(missing(0))?,
        active_software_version: sw.map(to_version).ok_or(missing(1))?,
        boot_version: boot.map(to_version).ok_or(missing(2))?,
        other_software_version: other.map(to_version),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Encodes `e` and checks the TLV header; returns the bytes.
    fn tlv(e: &Element<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        e.encode(&mut out).unwrap();
        assert_eq!(out.len(), e.encoded_len());
        assert_eq!(out[..2], e.kind().0.to_be_bytes());
        assert_eq!(
            usize::from(u16::from_be_bytes([out[2], out[3]])),
            e.value_len()
        );
        out
    }

    fn decode_tlv(bytes: &[u8]) -> Result<Element<'_>, ElementError> {
        let kind = ElementType(u16::from_be_bytes([bytes[0], bytes[1]]));
        Element::decode(kind, &bytes[4..])
    }

    /// Encode gives exactly `wire`, and `wire` decodes to `e`.
    fn assert_wire(e: Element<'_>, wire: &[u8]) {
        assert_eq!(tlv(&e), wire, "{e:?}");
        assert_eq!(decode_tlv(wire).unwrap(), e);
    }

    #[test]
    fn fixed_size_elements_byte_literals() {
        assert_wire(
            Element::ResultCode(ResultCode::SUCCESS),
            &[0x00, 0x21, 0x00, 0x04, 0, 0, 0, 0],
        );
        assert_wire(
            Element::ResultCode(ResultCode::IMAGE_DATA_ALREADY_PRESENT),
            &[0x00, 0x21, 0x00, 0x04, 0, 0, 0, 17],
        );
        assert_wire(Element::InitiateDownload, &[0x00, 0x1b, 0x00, 0x00]);
        assert_wire(
            Element::ImageInformation(ImageInformation {
                file_size: 70_512_640,
                md5: [0xd4; 16],
            }),
            &[
                0x00, 0x1a, 0x00, 0x14, 0x04, 0x33, 0xf0, 0x00, 0xd4, 0xd4, 0xd4, 0xd4, 0xd4, 0xd4,
                0xd4, 0xd4, 0xd4, 0xd4, 0xd4, 0xd4, 0xd4, 0xd4, 0xd4, 0xd4,
            ],
        );
        assert_wire(
            Element::ControlIpv4Address(ControlIpv4Address {
                address: Ipv4Addr::new(192, 0, 2, 1),
                wtp_count: 3,
            }),
            &[0x00, 0x0a, 0x00, 0x06, 192, 0, 2, 1, 0, 3],
        );
        assert_wire(
            Element::LocalIpv4Address(Ipv4Addr::new(10, 0, 0, 7)),
            &[0x00, 0x1e, 0x00, 0x04, 10, 0, 0, 7],
        );
        assert_wire(
            Element::MaximumMessageLength(8192),
            &[0x00, 0x1d, 0x00, 0x02, 0x20, 0x00],
        );
        assert_wire(
            Element::SessionId([7; 16]),
            &[
                0x00, 0x23, 0x00, 0x10, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
            ],
        );
        assert_wire(
            Element::WtpFrameTunnelMode(FrameTunnelMode(FrameTunnelMode::IEEE_802_3)),
            &[0x00, 0x29, 0x00, 0x01, 0x04],
        );
        assert_wire(
            Element::WtpMacType(MacType::Split),
            &[0x00, 0x2c, 0x00, 0x01, 1],
        );
        assert_wire(
            Element::EcnSupport(EcnSupport::Limited),
            &[0x00, 0x35, 0x00, 0x01, 0],
        );
        assert_wire(
            Element::WtpRadioInformation(RadioInformation {
                radio_id: 1,
                radio_type: RadioInformation::TYPE_G | RadioInformation::TYPE_N,
            }),
            &[0x04, 0x18, 0x00, 0x05, 1, 0, 0, 0, 0x0c],
        );
    }

    #[test]
    fn image_elements_byte_literals() {
        assert_wire(
            Element::ImageData(ImageData::Data(b"abc")),
            &[0x00, 0x18, 0x00, 0x04, 1, b'a', b'b', b'c'],
        );
        assert_wire(
            Element::ImageData(ImageData::Eof(b"z")),
            &[0x00, 0x18, 0x00, 0x02, 2, b'z'],
        );
        assert_wire(
            Element::ImageData(ImageData::Eof(b"")),
            &[0x00, 0x18, 0x00, 0x01, 2],
        );
        assert_wire(
            Element::ImageData(ImageData::Error),
            &[0x00, 0x18, 0x00, 0x01, 5],
        );
        assert_wire(
            Element::ImageIdentifier(ImageIdentifier {
                vendor_id: 9,
                data: "ap1g8",
            }),
            &[
                0x00, 0x19, 0x00, 0x09, 0, 0, 0, 9, b'a', b'p', b'1', b'g', b'8',
            ],
        );
        assert_wire(
            Element::VendorSpecific(VendorSpecific {
                vendor_id: 4_232_704,
                element_id: 127,
                data: b"C9105",
            }),
            &[
                0x00, 0x25, 0x00, 0x0b, 0x00, 0x40, 0x96, 0x00, 0x00, 0x7f, b'C', b'9', b'1', b'0',
                b'5',
            ],
        );
    }

    #[test]
    fn image_data_borrows_from_the_datagram() {
        let mut wire = vec![0x00, 0x18, 0x04, 0x01, 1];
        wire.extend_from_slice(&[0x5a; 1024]);
        let Element::ImageData(ImageData::Data(data)) = decode_tlv(&wire).unwrap() else {
            panic!("not image data")
        };
        assert_eq!(data.len(), 1024);
        assert!(std::ptr::eq(data.as_ptr(), wire[5..].as_ptr()), "copied");
    }

    #[test]
    fn image_data_may_exceed_the_rfc_block_size() {
        // Real controllers send 1377-byte blocks; the transfer, not the codec, limits them.
        let block = vec![1u8; 1377];
        let e = Element::ImageData(ImageData::Data(&block));
        assert_eq!(decode_tlv(&tlv(&e)).unwrap(), e);
    }

    #[test]
    fn board_data_descriptor_and_ac_descriptor_byte_literals() {
        let mac = [0x00, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f];
        let mut wire = vec![0x00, 0x26, 0x00, 37, 0x00, 0x40, 0x96, 0x00];
        wire.extend_from_slice(b"\x00\x00\x00\x08C9120AXI");
        wire.extend_from_slice(b"\x00\x01\x00\x07FOC1234");
        wire.extend_from_slice(&[0, 4, 0, 6]);
        wire.extend_from_slice(&mac);
        assert_wire(
            Element::WtpBoardData(WtpBoardData {
                vendor_id: 4_232_704,
                model: b"C9120AXI",
                serial: b"FOC1234",
                board_id: None,
                board_revision: None,
                base_mac: Some(&mac),
            }),
            &wire,
        );

        let encryption = [EncryptionCapability {
            wbid: 1,
            capabilities: 0,
        }];
        let mut wire = vec![0x00, 0x27, 0x00, 45, 2, 2, 1, 0x01, 0x00, 0x00];
        wire.extend_from_slice(b"\x00\x40\x96\x00\x00\x00\x00\x031.0");
        wire.extend_from_slice(b"\x00\x40\x96\x00\x00\x01\x00\x0917.3.3.26");
        wire.extend_from_slice(b"\x00\x40\x96\x00\x00\x02\x00\x031.1");
        let cisco = |value| VendorVersion {
            vendor_id: 4_232_704,
            value,
        };
        let d = Element::WtpDescriptor(WtpDescriptor {
            max_radios: 2,
            radios_in_use: 2,
            encryption: SubElements::new(&encryption),
            hardware_version: cisco(b"1.0"),
            active_software_version: cisco(b"17.3.3.26"),
            boot_version: cisco(b"1.1"),
            other_software_version: None,
        });
        assert_wire(d, &wire);
        let Element::WtpDescriptor(back) = decode_tlv(&wire).unwrap() else {
            panic!()
        };
        assert_eq!(back.encryption.len(), 1);
        assert_eq!(back.encryption.iter().collect::<Vec<_>>(), encryption);

        let info = [
            AcInformation {
                vendor_id: 0,
                kind: AcInformation::SOFTWARE_VERSION,
                data: b"17.9.4.27",
            },
            AcInformation {
                vendor_id: 0,
                kind: AcInformation::HARDWARE_VERSION,
                data: b"C9800",
            },
        ];
        let mut wire = vec![0x00, 0x01, 0x00, 42];
        wire.extend_from_slice(&[0, 0, 0x03, 0xe8, 0, 3, 0, 100, 0x04, 2, 0, 0x02]);
        wire.extend_from_slice(b"\x00\x00\x00\x00\x00\x05\x00\x0917.9.4.27");
        wire.extend_from_slice(b"\x00\x00\x00\x00\x00\x04\x00\x05C9800");
        let ac = AcDescriptor {
            stations: 0,
            station_limit: 1000,
            active_wtps: 3,
            max_wtps: 100,
            security: 0x04,
            r_mac: 2,
            dtls_policy: 0x02,
            info: SubElements::new(&info),
        };
        assert_wire(Element::AcDescriptor(ac), &wire);
        let Element::AcDescriptor(back) = decode_tlv(&wire).unwrap() else {
            panic!()
        };
        assert_eq!(
            back.info_of(AcInformation::HARDWARE_VERSION)
                .map(|i| i.data),
            Some(&b"C9800"[..])
        );
        assert_eq!(format!("{:?}", back.info), format!("{:?}", ac.info));
    }

    #[test]
    fn length_rules_are_enforced_on_decode() {
        use ElementError as E;
        let t = ElementType::RESULT_CODE;
        assert_eq!(
            Element::decode(t, &[0, 0, 0]),
            Err(E::WrongLength {
                element: t,
                len: 3,
                expected: 4
            })
        );
        let t = ElementType::IMAGE_DATA;
        assert_eq!(
            Element::decode(t, &[]),
            Err(E::TooShort {
                element: t,
                len: 0,
                min: 1
            })
        );
        assert_eq!(
            Element::decode(t, &[5, 0]),
            Err(E::ErrorWithData { len: 1 })
        );
        assert_eq!(
            Element::decode(t, &[3, 0]),
            Err(E::UnknownImageDataType { data_type: 3 })
        );
        let t = ElementType::IMAGE_IDENTIFIER;
        assert_eq!(
            Element::decode(t, &[0, 0, 0, 9]),
            Err(E::TooShort {
                element: t,
                len: 4,
                min: 5
            })
        );
        assert_eq!(Element::decode(t, &[0, 0, 0, 9, 0xff]), Err(E::NotUtf8));
        let mut long = vec![0, 0, 0, 9];
        long.extend_from_slice(&[b'a'; 1025]);
        assert_eq!(
            Element::decode(t, &long),
            Err(E::TooLong {
                element: t,
                what: "data",
                len: 1025,
                max: 1024
            })
        );
        long.pop();
        assert!(Element::decode(t, &long).is_ok(), "1024 is allowed");
        let t = ElementType::IMAGE_INFORMATION;
        assert!(matches!(
            Element::decode(t, &[0; 19]),
            Err(E::WrongLength { expected: 20, .. })
        ));
        let t = ElementType::INITIATE_DOWNLOAD;
        assert!(matches!(
            Element::decode(t, &[0]),
            Err(E::WrongLength { expected: 0, .. })
        ));
        let t = ElementType::VENDOR_SPECIFIC_PAYLOAD;
        assert!(matches!(
            Element::decode(t, &[0; 6]),
            Err(E::TooShort { min: 7, .. })
        ));
        assert!(matches!(
            Element::decode(t, &[0; 6 + 2049]),
            Err(E::TooLong { max: 2048, .. })
        ));
        assert!(Element::decode(t, &[0; 6 + 2048]).is_ok());
        let t = ElementType::WTP_NAME;
        assert!(matches!(
            Element::decode(t, &[b'x'; 513]),
            Err(E::TooLong { max: 512, .. })
        ));
        assert!(matches!(
            Element::decode(ElementType::LOCATION_DATA, &[b'x'; 1025]),
            Err(E::TooLong { max: 1024, .. })
        ));
        assert_eq!(
            Element::decode(ElementType::WTP_MAC_TYPE, &[3]),
            Err(E::UnknownMacType { value: 3 })
        );
        assert_eq!(
            Element::decode(ElementType::ECN_SUPPORT, &[2]),
            Err(E::UnknownEcnSupport { value: 2 })
        );
        assert_eq!(
            Element::decode(ElementType::WTP_RADIO_INFORMATION, &[0, 0, 0, 0, 1]),
            Err(E::RadioIdOutOfRange { radio_id: 0 })
        );
        assert_eq!(
            Element::decode(ElementType::WTP_RADIO_INFORMATION, &[32, 0, 0, 0, 1]),
            Err(E::RadioIdOutOfRange { radio_id: 32 })
        );
        assert!(matches!(
            Element::decode(ElementType::AC_DESCRIPTOR, &[0; 11]),
            Err(E::TooShort { min: 12, .. })
        ));
        // An AC Information sub-element claiming 9 bytes with 8 present.
        let mut ac = vec![0; 12];
        ac.extend_from_slice(&[0, 0, 0, 0, 0, 4, 0, 9, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(
            Element::decode(ElementType::AC_DESCRIPTOR, &ac),
            Err(E::SubElementTruncated {
                element: ElementType::AC_DESCRIPTOR,
                offset: 0
            })
        );
    }

    fn board(subs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut v = vec![0, 0, 0, 9];
        for (t, d) in subs {
            v.extend_from_slice(&t.to_be_bytes());
            v.extend_from_slice(&(d.len() as u16).to_be_bytes());
            v.extend_from_slice(d);
        }
        v
    }

    #[test]
    fn board_data_sub_element_rules() {
        use ElementError as E;
        let t = ElementType::WTP_BOARD_DATA;
        assert_eq!(
            Element::decode(t, &board(&[(0, b"model"), (2, b"id")])),
            Err(E::MissingSubElement {
                element: t,
                sub_type: 1
            })
        );
        assert_eq!(
            Element::decode(t, &board(&[(0, b"m"), (1, b"s"), (0, b"again")])),
            Err(E::DuplicateSubElement {
                element: t,
                sub_type: 0
            })
        );
        assert!(matches!(
            Element::decode(t, &board(&[(0, b""), (1, b"s")])),
            Err(E::TooShort { min: 14, .. })
        ));
        let mut cut = board(&[(0, b"model"), (1, b"serial")]);
        cut.truncate(cut.len() - 1);
        assert_eq!(
            Element::decode(t, &cut),
            Err(E::SubElementTruncated {
                element: t,
                offset: 13
            })
        );
        // Unknown sub-element types are skipped.
        let wire = board(&[(0, b"model"), (9, b"vendor thing"), (1, b"serial")]);
        let Element::WtpBoardData(b) = Element::decode(t, &wire).unwrap() else {
            panic!()
        };
        assert_eq!(
            (b.model, b.serial, b.base_mac),
            (&b"model"[..], &b"serial"[..], None)
        );
        assert!(matches!(
            Element::decode(t, &board(&[(0, &[b'm'; 1025]), (1, b"s")])),
            Err(E::TooLong { max: 1024, .. })
        ));
    }

    #[test]
    fn wtp_descriptor_sub_element_rules() {
        use ElementError as E;
        let t = ElementType::WTP_DESCRIPTOR;
        let version = |kind: u16, v: &[u8]| {
            let mut out = vec![0, 0, 0, 9];
            out.extend_from_slice(&kind.to_be_bytes());
            out.extend_from_slice(&(v.len() as u16).to_be_bytes());
            out.extend_from_slice(v);
            out
        };
        let mut no_encryption = vec![1, 1, 0];
        for k in 0..3 {
            no_encryption.extend(version(k, b"1.0"));
        }
        assert_eq!(
            Element::decode(t, &no_encryption),
            Err(E::EncryptionCount { count: 0 })
        );
        let mut no_boot = vec![1, 1, 1, 1, 0, 0];
        no_boot.extend(version(0, b"hw-1.0"));
        no_boot.extend(version(1, b"17.3.3.26"));
        no_boot.extend(version(3, b"other"));
        assert_eq!(
            Element::decode(t, &no_boot),
            Err(E::MissingSubElement {
                element: t,
                sub_type: 2
            })
        );
        // Encryption count larger than the bytes that follow.
        let mut short = vec![1, 1, 40];
        short.extend_from_slice(&[0; 40]);
        assert_eq!(
            Element::decode(t, &short),
            Err(E::SubElementTruncated {
                element: t,
                offset: 3
            })
        );
    }

    #[test]
    fn encoding_refuses_what_decoding_would_and_writes_nothing() {
        let mut out = vec![0xaa];
        let too_long = [0u8; 2049];
        let bad = [
            Element::VendorSpecific(VendorSpecific {
                vendor_id: 1,
                element_id: 1,
                data: &too_long,
            }),
            Element::VendorSpecific(VendorSpecific {
                vendor_id: 1,
                element_id: 1,
                data: &[],
            }),
            Element::ImageIdentifier(ImageIdentifier {
                vendor_id: 1,
                data: "",
            }),
            Element::WtpRadioInformation(RadioInformation {
                radio_id: 0,
                radio_type: 1,
            }),
            Element::WtpDescriptor(WtpDescriptor {
                max_radios: 1,
                radios_in_use: 1,
                encryption: SubElements::new(&[]),
                hardware_version: VendorVersion {
                    vendor_id: 0,
                    value: b"hardware",
                },
                active_software_version: VendorVersion {
                    vendor_id: 0,
                    value: b"software",
                },
                boot_version: VendorVersion {
                    vendor_id: 0,
                    value: b"boot",
                },
                other_software_version: None,
            }),
            Element::Unknown {
                kind: ElementType(9999),
                value: &[0; 65536],
            },
        ];
        for e in bad {
            assert!(e.encode(&mut out).is_err(), "{:?}", e.kind());
            assert_eq!(out, [0xaa]);
        }
    }

    #[test]
    fn names_of_types_and_codes() {
        assert_eq!(ElementType::IMAGE_DATA.to_string(), "Image Data (24)");
        assert_eq!(ElementType(9999).to_string(), "element type 9999");
        assert_eq!(
            ResultCode::MISSING_MANDATORY_ELEMENT.to_string(),
            "20 Failure - Missing Mandatory Message Element"
        );
        assert_eq!(ResultCode(99).to_string(), "99 (unknown result code)");
        assert!(ResultCode::SUCCESS.is_success() && ResultCode::SUCCESS_NAT_DETECTED.is_success());
        assert!(!ResultCode::IMAGE_DATA_INVALID_CHECKSUM.is_success());
        for code in 0..=22 {
            assert!(ResultCode(code).description().is_some(), "{code}");
        }
        assert_eq!(ResultCode::IMAGE_DATA_INVALID_CHECKSUM.0, 14);
        assert_eq!(ResultCode::IMAGE_DATA_ALREADY_PRESENT.0, 17);
        assert_eq!(ResultCode::INVALID_IN_CURRENT_STATE.0, 18);
        assert_eq!(ResultCode::UNRECOGNIZED_ELEMENT.0, 21);
    }

    /// The types [`Element`] models; everything else decodes as `Unknown`.
    pub(crate) const MODELED: [u16; 20] = [
        1, 4, 10, 24, 25, 26, 27, 28, 29, 30, 33, 35, 37, 38, 39, 41, 44, 45, 53, 1048,
    ];

    type Version = (u32, Vec<u8>);

    /// An element that owns its data, so proptest can generate it.
    #[derive(Debug, Clone)]
    pub(crate) enum Owned {
        AcDescriptor([u16; 4], [u8; 3], Vec<(u32, u16, Vec<u8>)>),
        AcName(Vec<u8>),
        ControlIpv4(u32, u16),
        ImageData(u8, Vec<u8>),
        ImageIdentifier(u32, String),
        ImageInformation(u32, [u8; 16]),
        InitiateDownload,
        LocationData(Vec<u8>),
        MaximumMessageLength(u16),
        LocalIpv4(u32),
        ResultCode(u32),
        SessionId([u8; 16]),
        Vendor(u32, u16, Vec<u8>),
        Board(u32, Vec<u8>, Vec<u8>, [Option<Vec<u8>>; 3]),
        Descriptor([u8; 2], Vec<(u8, u16)>, [Version; 3], Option<Version>),
        FrameTunnel(u8),
        MacType(MacType),
        WtpName(Vec<u8>),
        Ecn(EcnSupport),
        Radio(u8, u32),
        Unknown(u16, Vec<u8>),
    }

    /// The sub-element slices an [`Owned`] lends its element.
    pub(crate) struct Lists<'a> {
        info: Vec<AcInformation<'a>>,
        encryption: Vec<EncryptionCapability>,
    }

    impl Owned {
        pub(crate) fn lists(&self) -> Lists<'_> {
            let mut l = Lists {
                info: Vec::new(),
                encryption: Vec::new(),
            };
            match self {
                Owned::AcDescriptor(_, _, info) => {
                    l.info = info
                        .iter()
                        .map(|(vendor_id, kind, data)| AcInformation {
                            vendor_id: *vendor_id,
                            kind: *kind,
                            data,
                        })
                        .collect();
                }
                Owned::Descriptor(_, enc, _, _) => {
                    l.encryption = enc
                        .iter()
                        .map(|&(wbid, capabilities)| EncryptionCapability { wbid, capabilities })
                        .collect();
                }
                _ => {}
            }
            l
        }

        pub(crate) fn element<'a>(&'a self, lists: &'a Lists<'a>) -> Element<'a> {
            let version = |(vendor_id, value): &'a Version| VendorVersion {
                vendor_id: *vendor_id,
                value,
            };
            match self {
                Owned::AcDescriptor([a, b, c, d], [security, r_mac, dtls_policy], _) => {
                    Element::AcDescriptor(AcDescriptor {
                        stations: *a,
                        station_limit: *b,
                        active_wtps: *c,
                        max_wtps: *d,
                        security: *security,
                        r_mac: *r_mac,
                        dtls_policy: *dtls_policy,
                        info: SubElements::new(&lists.info),
                    })
                }
                Owned::AcName(n) => Element::AcName(n),
                Owned::ControlIpv4(a, n) => Element::ControlIpv4Address(ControlIpv4Address {
                    address: Ipv4Addr::from(*a),
                    wtp_count: *n,
                }),
                Owned::ImageData(t, d) => Element::ImageData(match t {
                    1 => ImageData::Data(d),
                    2 => ImageData::Eof(d),
                    _ => ImageData::Error,
                }),
                Owned::ImageIdentifier(v, s) => Element::ImageIdentifier(ImageIdentifier {
                    vendor_id: *v,
                    data: s,
                }),
                Owned::ImageInformation(size, md5) => Element::ImageInformation(ImageInformation {
                    file_size: *size,
                    md5: *md5,
                }),
                Owned::InitiateDownload => Element::InitiateDownload,
                Owned::LocationData(l) => Element::LocationData(l),
                Owned::MaximumMessageLength(n) => Element::MaximumMessageLength(*n),
                Owned::LocalIpv4(a) => Element::LocalIpv4Address(Ipv4Addr::from(*a)),
                Owned::ResultCode(c) => Element::ResultCode(ResultCode(*c)),
                Owned::SessionId(id) => Element::SessionId(*id),
                Owned::Vendor(v, e, d) => Element::VendorSpecific(VendorSpecific {
                    vendor_id: *v,
                    element_id: *e,
                    data: d,
                }),
                Owned::Board(vendor_id, model, serial, [id, rev, mac]) => {
                    Element::WtpBoardData(WtpBoardData {
                        vendor_id: *vendor_id,
                        model,
                        serial,
                        board_id: id.as_deref(),
                        board_revision: rev.as_deref(),
                        base_mac: mac.as_deref(),
                    })
                }
                Owned::Descriptor([max_radios, radios_in_use], _, [hw, sw, boot], other) => {
                    Element::WtpDescriptor(WtpDescriptor {
                        max_radios: *max_radios,
                        radios_in_use: *radios_in_use,
                        encryption: SubElements::new(&lists.encryption),
                        hardware_version: version(hw),
                        active_software_version: version(sw),
                        boot_version: version(boot),
                        other_software_version: other.as_ref().map(version),
                    })
                }
                Owned::FrameTunnel(m) => Element::WtpFrameTunnelMode(FrameTunnelMode(*m)),
                Owned::MacType(m) => Element::WtpMacType(*m),
                Owned::WtpName(n) => Element::WtpName(n),
                Owned::Ecn(e) => Element::EcnSupport(*e),
                Owned::Radio(radio_id, radio_type) => {
                    Element::WtpRadioInformation(RadioInformation {
                        radio_id: *radio_id,
                        radio_type: *radio_type,
                    })
                }
                Owned::Unknown(kind, value) => Element::Unknown {
                    kind: ElementType(*kind),
                    value,
                },
            }
        }
    }

    fn bytes(range: std::ops::Range<usize>) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), range)
    }

    /// Any valid element, every variant.
    pub(crate) fn any_element() -> impl Strategy<Value = Owned> {
        let version = || (any::<u32>(), bytes(1..12));
        prop_oneof![
            (
                any::<[u16; 4]>(),
                any::<[u8; 3]>(),
                proptest::collection::vec((any::<u32>(), any::<u16>(), bytes(0..20)), 0..4)
            )
                .prop_map(|(f, b, i)| Owned::AcDescriptor(f, b, i)),
            bytes(0..40).prop_map(Owned::AcName),
            (any::<u32>(), any::<u16>()).prop_map(|(a, n)| Owned::ControlIpv4(a, n)),
            (prop_oneof![Just(1u8), Just(2), Just(5)], bytes(0..1400))
                .prop_map(|(t, d)| Owned::ImageData(t, if t == 5 { Vec::new() } else { d })),
            (any::<u32>(), "\\PC{1,20}").prop_map(|(v, s)| Owned::ImageIdentifier(v, s)),
            (any::<u32>(), any::<[u8; 16]>()).prop_map(|(s, m)| Owned::ImageInformation(s, m)),
            Just(Owned::InitiateDownload),
            bytes(0..40).prop_map(Owned::LocationData),
            any::<u16>().prop_map(Owned::MaximumMessageLength),
            any::<u32>().prop_map(Owned::LocalIpv4),
            any::<u32>().prop_map(Owned::ResultCode),
            any::<[u8; 16]>().prop_map(Owned::SessionId),
            (any::<u32>(), any::<u16>(), bytes(1..60)).prop_map(|(v, e, d)| Owned::Vendor(v, e, d)),
            (
                any::<u32>(),
                bytes(1..20),
                bytes(1..20),
                [
                    proptest::option::of(bytes(0..10)),
                    proptest::option::of(bytes(0..10)),
                    proptest::option::of(bytes(6..9)),
                ]
            )
                .prop_map(|(v, m, s, o)| Owned::Board(v, m, s, o)),
            (
                any::<[u8; 2]>(),
                proptest::collection::vec((0..=31u8, any::<u16>()), 1..4),
                [version(), version(), version()],
                proptest::option::of(version())
            )
                .prop_map(|(r, e, v, o)| Owned::Descriptor(r, e, v, o)),
            any::<u8>().prop_map(Owned::FrameTunnel),
            prop_oneof![
                Just(MacType::Local),
                Just(MacType::Split),
                Just(MacType::Both)
            ]
            .prop_map(Owned::MacType),
            bytes(0..40).prop_map(Owned::WtpName),
            prop_oneof![Just(EcnSupport::Limited), Just(EcnSupport::FullAndLimited)]
                .prop_map(Owned::Ecn),
            (1..=31u8, any::<u32>()).prop_map(|(r, t)| Owned::Radio(r, t)),
            (
                any::<u16>().prop_filter("modeled", |k| !MODELED.contains(k)),
                bytes(0..40)
            )
                .prop_map(|(k, v)| Owned::Unknown(k, v)),
        ]
    }

    proptest! {
        #[test]
        fn every_element_round_trips(owned in any_element()) {
            let lists = owned.lists();
            let e = owned.element(&lists);
            let wire = tlv(&e);
            prop_assert_eq!(decode_tlv(&wire).unwrap(), e);
        }

        #[test]
        fn element_decode_never_panics(
            kind in prop_oneof![proptest::sample::select(MODELED.to_vec()), any::<u16>()],
            value in bytes(0..80),
        ) {
            if let Ok(e) = Element::decode(ElementType(kind), &value) {
                let wire = tlv(&e);
                prop_assert_eq!(decode_tlv(&wire).unwrap(), e);
            }
        }
    }
}
