//! Identifier normalisation (`domain/`): each parser on any text, a query built from up to eight
//! lines, and the rule that a parsed value parses again to itself.
#![no_main]

use enrichd::domain::{
    DomainName, Email, OrgName, PersonName, PhoneE164, ProfileUrl, Query, QueryInput, Region,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(email) = Email::parse(&text) {
        let again = Email::parse(email.as_str()).expect("a parsed email parses again");
        assert_eq!(
            again.as_str(),
            email.as_str(),
            "email parsing is idempotent"
        );
    }
    if let Ok(domain) = DomainName::parse(&text) {
        let again = DomainName::parse(domain.as_str()).expect("a parsed domain parses again");
        assert_eq!(
            again.as_str(),
            domain.as_str(),
            "domain parsing is idempotent"
        );
    }
    let region: Option<Region> = "FR".parse().ok();
    if let Ok(phone) = PhoneE164::parse(&text, region) {
        let again = PhoneE164::parse(phone.as_str(), None).expect("an E.164 number parses again");
        assert_eq!(
            again.as_str(),
            phone.as_str(),
            "phone parsing is idempotent"
        );
    }
    let _ = PhoneE164::parse(&text, None);
    if let Ok(url) = ProfileUrl::parse(&text) {
        let again = ProfileUrl::parse(&url.to_url()).expect("a canonical profile URL parses again");
        assert_eq!(
            again.to_url(),
            url.to_url(),
            "profile URL parsing is idempotent"
        );
        assert_eq!(again.service(), url.service(), "and keeps the service");
    }
    let _ = PersonName::parse(&text);
    let _ = OrgName::parse(&text);

    let mut lines = text.lines().map(|l| Some(l.to_string()));
    let mut next = || lines.next().flatten();
    let input = QueryInput {
        email: next(),
        phone: next(),
        profile_url: next(),
        name: next(),
        first_name: next(),
        last_name: next(),
        company: next(),
        domain: next(),
    };
    let _ = Query::parse(&input, region);
});
