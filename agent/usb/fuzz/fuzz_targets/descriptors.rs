//! A USB device's descriptors, as sysfs hands them over from the device: parsing must give a
//! value or an error, never panic or read outside the input. What parses must agree with the
//! bytes: the ids and class where the device descriptor has them, every interface found at a
//! descriptor boundary, the descriptors tiling the input exactly (one byte less is refused, one
//! more descriptor adds exactly what it says).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wardbox_usb::descriptors::{InterfaceClass, parse};

fuzz_target!(|data: &[u8]| {
    let Ok(d) = parse(data) else {
        return;
    };
    assert!(data.len() >= 18 && data[0] == 18 && data[1] == 1, "a device descriptor first");
    assert_eq!(d.device_class, data[4]);
    assert_eq!((d.vendor, d.product), (u16::from_le_bytes([data[8], data[9]]), u16::from_le_bytes([data[10], data[11]])));
    // Walk the descriptors again: each interface the parser lists is one here, in order.
    let mut at = 18;
    let mut found = Vec::new();
    while at < data.len() {
        let len = usize::from(data[at]);
        assert!(len >= 2 && at + len <= data.len(), "parsed, so every length fits");
        if data[at + 1] == 4 {
            found.push(InterfaceClass { class: data[at + 5], subclass: data[at + 6], protocol: data[at + 7] });
        }
        at += len;
    }
    assert_eq!(at, data.len());
    assert_eq!(d.interfaces, found);
    if data.len() > 18 {
        assert!(parse(&data[..data.len() - 1]).is_err(), "the last descriptor cut off");
    }
    let mut more = data.to_vec();
    more.extend_from_slice(&[9, 4, 7, 0, 0, 0xff, 0x42, 0x01, 0]);
    if let Ok(more) = parse(&more) {
        let mut want = d.interfaces.clone();
        want.push(InterfaceClass { class: 0xff, subclass: 0x42, protocol: 0x01 });
        assert_eq!(more.interfaces, want, "one more interface descriptor adds that interface");
    } else {
        assert!(more.len() > 1 << 20, "only the size limit refuses one more valid descriptor");
    }
});
