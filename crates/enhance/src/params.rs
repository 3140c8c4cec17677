//! Enhancement parameters and their validation.

use serde::{Deserialize, Serialize};

/// Largest accepted strength for each parameter; 4x the standard strength already
/// produces heavy halos, so anything above is almost certainly a caller's mistake.
pub const MAX_STRENGTH: f32 = 4.0;

/// How strongly each effect is applied: 1.0 is the standard strength, 0.0 turns the
/// effect off, values up to [`MAX_STRENGTH`] are accepted.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EnhanceParams {
    /// Unsharp-mask strength.
    pub sharpness: f32,
    /// Contrast gain around mid-grey.
    pub contrast: f32,
    /// Mid-tone lift (a gamma curve).
    pub brightness: f32,
}

impl Default for EnhanceParams {
    fn default() -> Self {
        Self {
            sharpness: 1.0,
            contrast: 1.0,
            brightness: 1.0,
        }
    }
}

/// A parameter outside `0.0..=MAX_STRENGTH` or not finite.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{name} must be a finite number in 0..={MAX_STRENGTH}, got {value}")]
pub struct ParamsError {
    /// The parameter's name (`sharpness`, `contrast` or `brightness`).
    pub name: &'static str,
    /// The rejected value.
    pub value: f32,
}

impl EnhanceParams {
    /// Checks every field is finite and within `0.0..=MAX_STRENGTH`.
    pub fn validate(&self) -> Result<(), ParamsError> {
        for (name, value) in self.fields() {
            if !value.is_finite() || !(0.0..=MAX_STRENGTH).contains(&value) {
                return Err(ParamsError { name, value });
            }
        }
        Ok(())
    }

    /// The same parameters forced into the valid range (NaN becomes 0.0, the effect off).
    pub fn clamped(&self) -> Self {
        let fix = |v: f32| {
            if v.is_nan() {
                0.0
            } else {
                v.clamp(0.0, MAX_STRENGTH)
            }
        };
        Self {
            sharpness: fix(self.sharpness),
            contrast: fix(self.contrast),
            brightness: fix(self.brightness),
        }
    }

    /// Name and value of each field, in a fixed order.
    pub fn fields(&self) -> [(&'static str, f32); 3] {
        [
            ("sharpness", self.sharpness),
            ("contrast", self.contrast),
            ("brightness", self.brightness),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_rejects_out_of_range_and_nan() {
        assert!(EnhanceParams::default().validate().is_ok());
        let p = EnhanceParams {
            contrast: 4.5,
            ..Default::default()
        };
        assert_eq!(p.validate().unwrap_err().name, "contrast");
        let p = EnhanceParams {
            sharpness: f32::NAN,
            ..Default::default()
        };
        assert_eq!(p.validate().unwrap_err().name, "sharpness");
        let p = EnhanceParams {
            brightness: -0.1,
            ..Default::default()
        };
        assert!(p.validate().is_err());
        assert_eq!(p.clamped().brightness, 0.0);
    }
}
