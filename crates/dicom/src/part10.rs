//! Small, valid DICOM Part 10 files (PS3.10 §7): the 128-byte preamble, `DICM`, the file
//! meta information group in explicit VR little endian, then the data set in explicit VR little
//! endian (1.2.840.10008.1.2.1). Enough to write the synthetic region's images — the attributes
//! a PACS indexes and a viewer renders — not a general DICOM writer.

use crate::tags;

/// Explicit VR Little Endian.
pub const EXPLICIT_VR_LITTLE_ENDIAN: &str = "1.2.840.10008.1.2.1";

/// This implementation's class UID (under the 2.25 UUID arc) and version name.
const IMPLEMENTATION_CLASS_UID: &str = "2.25.271828182845904523536028747135266249";
const IMPLEMENTATION_VERSION: &str = "TSUNAGI_0_1";

/// One attribute: its tag, VR and encoded value (not yet padded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    /// The tag.
    pub tag: u32,
    /// The value representation, e.g. `*b"PN"`.
    pub vr: [u8; 2],
    /// The value's bytes, in the data set's character set for text.
    pub value: Vec<u8>,
}

impl Element {
    /// A text attribute (the bytes already in the data set's character set).
    pub fn bytes(tag: u32, vr: &[u8; 2], value: Vec<u8>) -> Self {
        Self {
            tag,
            vr: *vr,
            value,
        }
    }

    /// A text attribute of ASCII (UIDs, codes, dates, numbers as text).
    pub fn text(tag: u32, vr: &[u8; 2], value: &str) -> Self {
        Self::bytes(tag, vr, value.as_bytes().to_vec())
    }

    /// An unsigned short.
    pub fn us(tag: u32, value: u16) -> Self {
        Self::bytes(tag, b"US", value.to_le_bytes().to_vec())
    }
}

/// VRs whose length is 4 bytes after 2 reserved ones (PS3.5 §7.1.2).
fn long_length(vr: &[u8; 2]) -> bool {
    matches!(
        vr,
        b"OB" | b"OD" | b"OF" | b"OL" | b"OV" | b"OW" | b"SQ" | b"UC" | b"UN" | b"UR" | b"UT"
    )
}

fn write_element(out: &mut Vec<u8>, element: &Element) {
    let mut value = element.value.clone();
    if value.len() % 2 == 1 {
        // UIDs and binary values are padded with NUL, text with a space.
        let pad = if matches!(&element.vr, b"UI" | b"OB" | b"UN") {
            0
        } else {
            b' '
        };
        value.push(pad);
    }
    out.extend_from_slice(&((element.tag >> 16) as u16).to_le_bytes());
    out.extend_from_slice(&((element.tag & 0xffff) as u16).to_le_bytes());
    out.extend_from_slice(&element.vr);
    let length = u32::try_from(value.len()).unwrap_or(u32::MAX);
    if long_length(&element.vr) {
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&length.to_le_bytes());
    } else {
        out.extend_from_slice(&(length.min(0xffff) as u16).to_le_bytes());
    }
    out.extend_from_slice(&value);
}

/// A Part 10 file of `elements` (in any order: they are written in tag order), whose SOP
/// class and instance are read from them.
pub fn file(mut elements: Vec<Element>) -> Vec<u8> {
    elements.sort_by_key(|element| element.tag);
    let find = |tag: u32| {
        elements
            .iter()
            .find(|element| element.tag == tag)
            .map(|element| String::from_utf8_lossy(&element.value).into_owned())
            .unwrap_or_default()
    };
    let meta = [
        Element::bytes(0x0002_0001, b"OB", vec![0, 1]),
        Element::text(0x0002_0002, b"UI", &find(tags::SOP_CLASS_UID)),
        Element::text(0x0002_0003, b"UI", &find(tags::SOP_INSTANCE_UID)),
        Element::text(0x0002_0010, b"UI", EXPLICIT_VR_LITTLE_ENDIAN),
        Element::text(0x0002_0012, b"UI", IMPLEMENTATION_CLASS_UID),
        Element::text(0x0002_0013, b"SH", IMPLEMENTATION_VERSION),
    ];
    let mut group = Vec::new();
    for element in &meta {
        write_element(&mut group, element);
    }
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    write_element(
        &mut out,
        &Element::bytes(
            0x0002_0000,
            b"UL",
            u32::try_from(group.len())
                .unwrap_or(u32::MAX)
                .to_le_bytes()
                .to_vec(),
        ),
    );
    out.extend_from_slice(&group);
    for element in elements.iter().filter(|element| element.tag >> 16 != 2) {
        write_element(&mut out, element);
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_file_has_its_preamble_meta_group_and_sorted_padded_elements() {
        let bytes = file(vec![
            Element::text(tags::SOP_INSTANCE_UID, b"UI", "1.2.3"),
            Element::text(tags::SOP_CLASS_UID, b"UI", tags::sop_class::CT),
            Element::us(tags::ROWS, 2),
            Element::bytes(tags::PIXEL_DATA, b"OW", vec![1, 2, 3, 4]),
        ]);
        assert!(bytes[..128].iter().all(|b| *b == 0));
        assert_eq!(&bytes[128..132], b"DICM");
        // (0002,0000) UL 4 <length of the rest of group 2>
        assert_eq!(&bytes[132..138], b"\x02\x00\x00\x00UL");
        let group_length = u32::from_le_bytes(bytes[140..144].try_into().unwrap()) as usize;
        let data = &bytes[144 + group_length..];
        // The data set in tag order: SOP class (0008,0016) first, its UID padded with NUL.
        assert_eq!(&data[..6], b"\x08\x00\x16\x00UI");
        let length = u16::from_le_bytes([data[6], data[7]]) as usize;
        assert_eq!(length % 2, 0);
        assert_eq!(&data[8..8 + length], b"1.2.840.10008.5.1.4.1.1.2\0");
        // Pixel data last, with a 4-byte length.
        let tail = &data[data.len() - 16..];
        assert_eq!(&tail[..8], b"\xe0\x7f\x10\x00OW\x00\x00");
        assert_eq!(&tail[8..12], &4u32.to_le_bytes());
        let group = &bytes[144..144 + group_length];
        assert!(group.windows(5).any(|w| w == b"1.2.3"));
    }
}
