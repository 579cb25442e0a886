//! A USB device's descriptors from sysfs: parsed by `wardbox_usb::descriptors` (pure, fuzzed
//! there without the agent); see that module for what is read and checked.

pub use wardbox_usb::descriptors::{InterfaceClass, UsbDescriptors, parse};

#[cfg(test)]
pub(crate) mod tests {
    /// Descriptors as a device sends them: the device descriptor, one configuration, one
    /// interface per class triple (each with one endpoint), and a class-specific descriptor
    /// (as a HID's) between them. (The same builder as `wardbox_usb`'s tests.)
    pub(crate) fn device(device_class: u8, vendor: u16, product: u16, interfaces: &[(u8, u8, u8)]) -> Vec<u8> {
        let mut b = vec![18, 1, 0x00, 0x02, device_class, 0, 0, 64];
        b.extend_from_slice(&vendor.to_le_bytes());
        b.extend_from_slice(&product.to_le_bytes());
        b.extend_from_slice(&[0x00, 0x01, 1, 2, 3, 1]);
        let mut body = Vec::new();
        for (n, &(class, subclass, protocol)) in interfaces.iter().enumerate() {
            body.extend_from_slice(&[9, 4, n as u8, 0, 1, class, subclass, protocol, 0]);
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
    fn the_agent_parses_with_wardbox_usb() {
        let d = super::parse(&device(0, 0x046d, 0xc31c, &[(3, 1, 1)])).expect("parse");
        assert_eq!((d.vendor, d.product), (0x046d, 0xc31c));
        assert_eq!(d.interfaces, vec![super::InterfaceClass { class: 3, subclass: 1, protocol: 1 }]);
    }
}
