use std::fmt;
use std::str::FromStr;

use phonenumber::country;

use super::Invalid;

/// An ISO 3166 region used to read national phone numbers (`"FR"`, `"US"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region(country::Id);

impl FromStr for Region {
    type Err = Invalid;

    fn from_str(s: &str) -> Result<Self, Invalid> {
        country::Id::from_str(&s.trim().to_uppercase())
            .map(Region)
            .map_err(|_| Invalid::new(format!("'{s}' is not an ISO 3166 region code")))
    }
}

/// A phone number in E.164 form (`+33612345678`), validated against libphonenumber's metadata.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PhoneE164(String);

impl PhoneE164 {
    /// Parses an international number, or a national one when `region` is given.
    pub fn parse(raw: &str, region: Option<Region>) -> Result<Self, Invalid> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(Invalid::new("is empty"));
        }
        let international = trimmed.starts_with('+') || trimmed.starts_with("00");
        if !international && region.is_none() {
            return Err(Invalid::new(
                "is a national number and no default region is configured: use +<country code>",
            ));
        }
        let normalised = match trimmed.strip_prefix("00") {
            Some(rest) => format!("+{rest}"),
            None => trimmed.to_string(),
        };
        unpanicked(|| {
            let number = phonenumber::parse(region.map(|r| r.0), &normalised)
                .map_err(|_| Invalid::new("is not a phone number"))?;
            if !phonenumber::is_valid(&number) {
                return Err(Invalid::new("is not a valid number for its country"));
            }
            Ok(Self(
                number.format().mode(phonenumber::Mode::E164).to_string(),
            ))
        })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Runs the phone library, whose parser and validator have panicked on odd inputs before: a panic is
/// that value's error ("could not be read"), never the request's, the batch row's or the part's.
fn unpanicked<T>(read: impl FnOnce() -> Result<T, Invalid>) -> Result<T, Invalid> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(read))
        .unwrap_or_else(|_| Err(Invalid::new("could not be read as a phone number")))
}

impl fmt::Debug for PhoneE164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PhoneE164(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fr() -> Option<Region> {
        Some("fr".parse().expect("FR is a region"))
    }

    #[test]
    fn a_panic_in_the_phone_library_is_the_values_error() {
        let read: Result<u8, Invalid> = unpanicked(|| panic!("the library's own bug"));
        assert_eq!(
            read.err().map(|e| e.to_string()),
            Some("could not be read as a phone number".to_string())
        );
        // Inputs that made earlier versions of the library panic read as invalid.
        let ch = Some("CH".parse().expect("CH is a region"));
        assert!(PhoneE164::parse("003-836-4618x3001", ch).is_err());
        assert!(PhoneE164::parse("  2 22#:", ch).is_err());
        assert!(PhoneE164::parse("+  2 22#:", None).is_err());
    }

    #[test]
    fn parses_to_e164() {
        let cases = [
            ("+33 6 12 34 56 78", None, "+33612345678"),
            ("0033 6 12 34 56 78", None, "+33612345678"),
            ("06 12 34 56 78", fr(), "+33612345678"),
            ("+1 (415) 555-2671", None, "+14155552671"),
            ("+44 20 7946 0958", None, "+442079460958"),
        ];
        for (raw, region, want) in cases {
            assert_eq!(
                PhoneE164::parse(raw, region).map(|p| p.0).as_deref(),
                Ok(want),
                "{raw}"
            );
        }
    }

    #[test]
    fn national_number_needs_a_region() {
        let err = PhoneE164::parse("06 12 34 56 78", None).expect_err("no region");
        assert!(err.0.contains("region"));
    }

    #[test]
    fn refuses_garbage() {
        for raw in ["", "+1", "hello", "+33 1"] {
            assert!(PhoneE164::parse(raw, fr()).is_err(), "{raw}");
        }
    }
}
