//! What a USB device says it is, from the bytes it sent. A hostile device controls every one of
//! them, so the parser is on its own here: pure, without the agent's dependencies, and fuzzed
//! (`fuzz/`, target `descriptors`). The agent's USB control (`agent/src/usb/`) reads the sysfs
//! file and decides from the result (docs/update.md, "USB control").
//!
//! - [`descriptors`]: the device descriptor and every interface's class, every length checked.

pub mod descriptors;
