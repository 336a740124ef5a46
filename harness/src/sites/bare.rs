//! The symbolizer of a library built without the `symbolize` feature (a crate's dev-dependency with
//! `default-features = false`): frames keep their module and offset, and [`Symbolizer::shortfall`] says
//! why, as a report does. The `threadleak` binary always has the feature (`symbolize.rs`).

use crate::record::Frame;

/// Leaves every frame as its module and offset.
#[derive(Default)]
pub struct Symbolizer;

impl Symbolizer {
    /// A symbolizer; the deadline does not matter, as nothing is read.
    pub fn until(_deadline: Option<std::time::Instant>) -> Symbolizer {
        Symbolizer
    }

    /// Why the frames were left unnamed.
    pub fn shortfall(&self) -> Option<&str> {
        Some("threadleak was built without its `symbolize` feature: frames are modules and offsets")
    }

    /// The frames of a stack given as (module, offset) return addresses, innermost first, unnamed.
    pub fn frames(&mut self, raw: &[(String, u64)]) -> Vec<Frame> {
        raw.iter().map(|(module, offset)| Frame::unnamed(module, *offset)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_keep_their_module_and_offset_and_it_is_said() {
        let mut symbolizer = Symbolizer::until(None);
        let frames = symbolizer.frames(&[("/usr/lib/libx.so.1".into(), 0x1234)]);
        assert_eq!(
            (frames[0].module.as_str(), frames[0].offset, frames[0].function.as_deref()),
            ("/usr/lib/libx.so.1", 0x1234, None)
        );
        assert!(symbolizer.shortfall().unwrap().contains("`symbolize` feature"));
    }
}
