//! A USB device's descriptors as the kernel keeps them in sysfs (`/sys/bus/usb/devices/<dev>/descriptors`):
//! the 18-byte device descriptor, then every configuration descriptor with its interface,
//! endpoint and class-specific descriptors, raw. The kernel reads them while enumerating a
//! device it has not authorized, so the policy can decide before any driver binds (an
//! unauthorized device has no interface directories to look at).
//!
//! The bytes come from the device itself: every length is checked, and anything that does not
//! parse is an error (the policy refuses such a device).

/// What a device says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsbDescriptors {
    pub vendor: u16,
    pub product: u16,
    /// `bDeviceClass`: 0 means "see each interface".
    pub device_class: u8,
    /// Every interface of every configuration and alternate setting, in the order given.
    pub interfaces: Vec<InterfaceClass>,
}

/// One interface's class triple (`bInterfaceClass`, `bInterfaceSubClass`, `bInterfaceProtocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterfaceClass {
    pub class: u8,
    pub subclass: u8,
    pub protocol: u8,
}

impl std::fmt::Display for InterfaceClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:02x}:{:02x}:{:02x}", self.class, self.subclass, self.protocol)
    }
}

const DEVICE: u8 = 1;
const INTERFACE: u8 = 4;
const DEVICE_LEN: usize = 18;
const INTERFACE_LEN: usize = 9;
/// More descriptors than any real device has (the kernel caps a configuration at 64 KiB).
const MAX_BYTES: usize = 1 << 20;

/// Parses the sysfs `descriptors` file.
pub fn parse(bytes: &[u8]) -> Result<UsbDescriptors, String> {
    if bytes.len() > MAX_BYTES {
        return Err(format!("{} bytes of descriptors, more than a device has", bytes.len()));
    }
    if bytes.len() < DEVICE_LEN || bytes[0] as usize != DEVICE_LEN || bytes[1] != DEVICE {
        return Err("no device descriptor at the start".into());
    }
    let device_class = bytes[4];
    let vendor = u16::from_le_bytes([bytes[8], bytes[9]]);
    let product = u16::from_le_bytes([bytes[10], bytes[11]]);
    let mut interfaces = Vec::new();
    let mut at = DEVICE_LEN;
    while at < bytes.len() {
        let rest = &bytes[at..];
        if rest.len() < 2 {
            return Err(format!("a descriptor cut off at byte {at}"));
        }
        let len = rest[0] as usize;
        if len < 2 || len > rest.len() {
            return Err(format!("a descriptor at byte {at} claims {len} bytes ({} left)", rest.len()));
        }
        if rest[1] == INTERFACE {
            if len < INTERFACE_LEN {
                return Err(format!("an interface descriptor of {len} bytes at byte {at}"));
            }
            interfaces.push(InterfaceClass { class: rest[5], subclass: rest[6], protocol: rest[7] });
        }
        at += len;
    }
    Ok(UsbDescriptors { vendor, product, device_class, interfaces })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Descriptors as a device sends them: the device descriptor, one configuration, one
    /// interface per class triple (each with one endpoint), and a class-specific descriptor
    /// (as a HID's) between them.
    fn device(device_class: u8, vendor: u16, product: u16, interfaces: &[(u8, u8, u8)]) -> Vec<u8> {
        let mut b = vec![18, DEVICE, 0x00, 0x02, device_class, 0, 0, 64];
        b.extend_from_slice(&vendor.to_le_bytes());
        b.extend_from_slice(&product.to_le_bytes());
        b.extend_from_slice(&[0x00, 0x01, 1, 2, 3, 1]);
        let mut body = Vec::new();
        for (n, &(class, subclass, protocol)) in interfaces.iter().enumerate() {
            body.extend_from_slice(&[9, INTERFACE, n as u8, 0, 1, class, subclass, protocol, 0]);
            body.extend_from_slice(&[9, 0x21, 0x11, 0x01, 0, 1, 0x22, 63, 0]);
            body.extend_from_slice(&[7, 5, 0x81, 3, 8, 0, 10]);
        }
        let total = (9 + body.len()) as u16;
        b.extend_from_slice(&[9, 2]);
        b.extend_from_slice(&total.to_le_bytes());
        b.extend_from_slice(&[interfaces.len() as u8, 1, 0, 0x80, 50]);
        b.extend_from_slice(&body);
        b
    }

    #[test]
    fn a_composite_device_lists_every_interface() {
        let d = parse(&device(0, 0x0781, 0x5583, &[(8, 6, 0x50), (3, 1, 1)])).expect("parse");
        assert_eq!((d.vendor, d.product, d.device_class), (0x0781, 0x5583, 0));
        assert_eq!(d.interfaces, vec![
            InterfaceClass { class: 8, subclass: 6, protocol: 0x50 },
            InterfaceClass { class: 3, subclass: 1, protocol: 1 },
        ]);
        assert_eq!(d.interfaces[0].to_string(), "08:06:50");
    }

    #[test]
    fn broken_descriptors_are_errors_not_guesses() {
        let good = device(0, 1, 2, &[(3, 1, 1)]);
        assert!(parse(&good[..10]).is_err(), "a short device descriptor");
        assert!(parse(&good[..good.len() - 1]).is_err(), "the last descriptor cut off");
        let mut zero = good.clone();
        zero[18] = 0;
        assert!(parse(&zero).expect_err("zero length").contains("claims 0 bytes"), "a zero length would loop forever");
        let mut short_interface = device(0, 1, 2, &[]);
        short_interface.extend_from_slice(&[5, INTERFACE, 0, 0, 0]);
        assert!(parse(&short_interface).expect_err("short interface").contains("interface descriptor of 5 bytes"));
        let mut not_device = good;
        not_device[1] = 2;
        assert!(parse(&not_device).is_err());
        assert!(parse(&[]).is_err());
    }

    /// The fuzz seeds (`fuzz/seeds/descriptors/`) are byte strings laid out as real devices
    /// send them (class-specific descriptors, SuperSpeed companions, interface associations,
    /// alternate settings, two configurations): each parses to what the device is.
    #[test]
    fn the_fuzz_seeds_parse_as_the_devices_they_are() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/descriptors");
        let class = |class, subclass, protocol| InterfaceClass { class, subclass, protocol };
        let keyboard = class(3, 1, 1);
        let bulk_only = class(8, 6, 0x50);
        for (file, vendor, product, device_class, interfaces) in [
            ("keyboard", 0x413c, 0x2113, 0, vec![keyboard, class(3, 0, 0)]),
            ("stick", 0x0781, 0x5567, 0, vec![bulk_only]),
            ("stick-usb3-uas", 0x0781, 0x5581, 0, vec![bulk_only, class(8, 6, 0x62)]),
            ("composite-security-key", 0x1050, 0x0407, 0, vec![keyboard, class(3, 0, 0), class(0x0b, 0, 0)]),
            ("composite-stick-keyboard", 0x0781, 0x5567, 0, vec![bulk_only, keyboard]),
            ("webcam", 0x046d, 0x0825, 0xef, [class(0x0e, 1, 0), class(0x0e, 2, 0), class(0x0e, 2, 0)].repeat(2)),
            ("hub", 0x05e3, 0x0608, 9, vec![class(9, 0, 0)]),
        ] {
            let bytes = std::fs::read(dir.join(file)).unwrap_or_else(|e| panic!("seed {file}: {e}"));
            let d = parse(&bytes).unwrap_or_else(|e| panic!("seed {file}: {e}"));
            assert_eq!((d.vendor, d.product, d.device_class), (vendor, product, device_class), "{file}");
            assert_eq!(d.interfaces, interfaces, "{file}");
            // The descriptors tile the file exactly: one byte less cuts the last one off.
            assert!(parse(&bytes[..bytes.len() - 1]).is_err(), "{file}");
        }
    }
}
