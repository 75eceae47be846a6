use super::*;

fn fr() -> Option<Region> {
    Some("FR".parse().expect("FR is a region"))
}
fn region(code: &str) -> Option<Region> {
    Some(code.parse().expect("valid region"))
}

struct Case {
    name: &'static str,
    text: &'static str,
    region: Option<Region>,
    emails: &'static [&'static str],
    phones: &'static [&'static str],
    profiles: &'static [&'static str],
    person: Option<&'static str>,
    title: Option<&'static str>,
    company: Option<&'static str>,
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "english, title and company on separate lines",
            text: "Hi Tom,\n\nThanks for the call, see you Tuesday.\n\nBest regards,\n\nJane Doe\nHead of Partnerships\nAcme Robotics Inc.\nT: +1 (415) 555-2671\njane.doe@acme-robotics.com\nhttps://www.linkedin.com/in/jane-doe-42/",
            region: None,
            emails: &["jane.doe@acme-robotics.com"],
            phones: &["+14155552671"],
            profiles: &["linkedin.com/in/jane-doe-42"],
            person: Some("Jane Doe"),
            title: Some("Head of Partnerships"),
            company: Some("Acme Robotics Inc."),
        },
        Case {
            name: "english, one line with pipes",
            text: "Cheers,\nMark O'Neill | CTO | Brightwave Ltd\nm: +44 7911 123456 | mark@brightwave.co.uk\ngithub.com/markoneill",
            region: None,
            emails: &["mark@brightwave.co.uk"],
            phones: &["+447911123456"],
            profiles: &["github.com/markoneill"],
            person: Some("Mark O'Neill"),
            title: Some("CTO"),
            company: Some("Brightwave Ltd"),
        },
        Case {
            name: "english, title at company",
            text: "Thanks,\nPriya Raman\nSenior Data Engineer at Northwind\nMobile: +1 212 555 0147\nX: https://twitter.com/priyaraman",
            region: None,
            emails: &[],
            phones: &["+12125550147"],
            profiles: &["x.com/priyaraman"],
            person: Some("Priya Raman"),
            title: Some("Senior Data Engineer"),
            company: Some("Northwind"),
        },
        Case {
            name: "french, national numbers with region",
            text: "Bonjour,\n\nJe vous envoie le devis n° 20240518 ci-joint.\n\nCordialement,\n\nÉlodie Martin\nDirectrice commerciale\nSolvéa SAS\nTél. : 01 42 68 53 00\nMob. 06 12 34 56 78\nelodie.martin@solvea.fr",
            region: fr(),
            emails: &["elodie.martin@solvea.fr"],
            phones: &["+33142685300", "+33612345678"],
            profiles: &[],
            person: Some("Élodie Martin"),
            title: Some("Directrice commerciale"),
            company: Some("Solvéa SAS"),
        },
        Case {
            name: "french, title chez company and international trunk prefix",
            text: "Bien cordialement,\nJean-Luc Petit\nResponsable achats chez Ferronnerie Dubois\nTéléphone : +33 (0)4 78 12 34 56\njl.petit [at] ferronnerie-dubois [dot] fr",
            region: fr(),
            emails: &["jl.petit@ferronnerie-dubois.fr"],
            phones: &["+33478123456"],
            profiles: &[],
            person: Some("Jean-Luc Petit"),
            title: Some("Responsable achats"),
            company: Some("Ferronnerie Dubois"),
        },
        Case {
            name: "german, Handy label and GmbH line",
            text: "Hallo Herr Weber,\nanbei die Unterlagen.\n\nMit freundlichen Grüßen\n\nKatrin Schäfer\nLeiterin Vertrieb\nMüller Maschinenbau GmbH\nTel.: +49 89 12345678\nHandy: 0151 23456789\nE-Mail: k.schaefer@mueller-maschinenbau.de",
            region: region("DE"),
            emails: &["k.schaefer@mueller-maschinenbau.de"],
            phones: &["+498912345678", "+4915123456789"],
            profiles: &[],
            person: Some("Katrin Schäfer"),
            title: Some("Leiterin Vertrieb"),
            company: Some("Müller Maschinenbau GmbH"),
        },
        Case {
            name: "german, bei company",
            text: "Viele Grüße\nJonas Becker\nSoftware-Entwickler bei Datenwerk AG\nM: +49 170 1234567",
            region: region("DE"),
            emails: &[],
            phones: &["+491701234567"],
            profiles: &[],
            person: Some("Jonas Becker"),
            title: Some("Software-Entwickler"),
            company: Some("Datenwerk AG"),
        },
        Case {
            name: "spanish, en company",
            text: "Un saludo,\n\nLucía Fernández\nDirectora de Marketing en Grupo Hostelero Sol\nMóvil: +34 612 34 56 78\nlucia.fernandez@gruposol.es",
            region: region("ES"),
            emails: &["lucia.fernandez@gruposol.es"],
            phones: &["+34612345678"],
            profiles: &[],
            person: Some("Lucía Fernández"),
            title: Some("Directora de Marketing"),
            company: Some("Grupo Hostelero Sol"),
        },
        Case {
            name: "spanish, atentamente with comma separator",
            text: "Atentamente,\nCarlos Ruiz Gómez\nGerente General, Transportes Ruiz S.L.\nTeléfono: 912 345 678",
            region: region("ES"),
            emails: &[],
            phones: &["+34912345678"],
            profiles: &[],
            person: Some("Carlos Ruiz Gómez"),
            title: Some("Gerente General"),
            company: Some("Transportes Ruiz S.L."),
        },
        Case {
            name: "dash separator block without closing words",
            text: "--\nSam Lee\nFounder & CEO - Kitebase\n+1-646-555-0199 · sam@kitebase.io · keybase.io/samlee",
            region: None,
            emails: &["sam@kitebase.io"],
            phones: &["+16465550199"],
            profiles: &["keybase.io/samlee"],
            person: Some("Sam Lee"),
            title: Some("Founder & CEO"),
            company: Some("Kitebase"),
        },
        Case {
            name: "national number without a label is not read as a phone",
            text: "Invoice 0612345678 is attached.\n\nRegards,\nAnna Kowalski",
            region: fr(),
            emails: &[],
            phones: &[],
            profiles: &[],
            person: Some("Anna Kowalski"),
            title: None,
            company: None,
        },
        Case {
            name: "html signature with entities and links",
            text: "<div><p>Best regards,</p><p><b>Ren&eacute;e Dubois</b><br>VP Engineering | Quantix</p><p><a href=\"mailto:renee.dubois@quantix.io?subject=Hi\">Email me</a> &middot; <a href=\"tel:+33612345678\">call</a> &middot; <a href=\"https://www.linkedin.com/in/renee-dubois\">LinkedIn</a></p></div>",
            region: None,
            emails: &["renee.dubois@quantix.io"],
            phones: &["+33612345678"],
            profiles: &["linkedin.com/in/renee-dubois"],
            person: Some("Renée Dubois"),
            title: Some("VP Engineering"),
            company: Some("Quantix"),
        },
    ]
}

#[test]
fn signatures_yield_identifiers_and_the_signer() {
    let all = cases();
    assert!(all.len() >= 10);
    let mut failures = Vec::new();
    for c in all {
        let got = extract(c.text, c.region);
        let emails: Vec<&str> = got.emails.iter().map(Email::as_str).collect();
        let phones: Vec<&str> = got.phones.iter().map(PhoneE164::as_str).collect();
        let profiles: Vec<&str> = got.profile_urls.iter().map(ProfileUrl::canonical).collect();
        let checks = [
            ("emails", format!("{emails:?}"), format!("{:?}", c.emails)),
            ("phones", format!("{phones:?}"), format!("{:?}", c.phones)),
            (
                "profiles",
                format!("{profiles:?}"),
                format!("{:?}", c.profiles),
            ),
            (
                "name",
                format!("{:?}", got.name.as_deref()),
                format!("{:?}", c.person),
            ),
            (
                "title",
                format!("{:?}", got.title.as_deref()),
                format!("{:?}", c.title),
            ),
            (
                "company",
                format!("{:?}", got.company.as_deref()),
                format!("{:?}", c.company),
            ),
        ];
        for (what, got, want) in checks {
            if got != want {
                failures.push(format!("{}: {what}: got {got}, want {want}", c.name));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

const PAGE: &str = r#"<!DOCTYPE html>
<html lang="en"><head>
<meta charset="utf-8">
<title>Acme Robotics &ndash; Warehouse robots that just work</title>
<meta property="og:site_name" content="Acme Robotics">
<meta name="description" content="Acme builds autonomous warehouse robots &amp; fleet software.">
<style>.x{color:red}</style>
<script>var support = "not-an-address@tracking.example";</script>
</head><body>
<nav><a href="/about">About</a></nav>
<footer>
<p>Contact: <a href="mailto:hello@acme-robotics.com">hello@acme-robotics.com</a></p>
<p>Sales: sales&#64;acme-robotics.com &middot; <a href="tel:+14155552671">+1 415 555 2671</a></p>
<p><a href="https://www.linkedin.com/company/acme-robotics/">LinkedIn</a>
<a href="https://x.com/acmerobotics">X</a> <a href="https://github.com/acme-robotics">GitHub</a>
<a href="https://www.partner.example/">Partner</a></p>
</footer></body></html>"#;

#[test]
fn html_page_yields_contacts_and_social_links() {
    let got = extract(PAGE, None);
    let emails: Vec<&str> = got.emails.iter().map(Email::as_str).collect();
    assert_eq!(
        emails,
        ["hello@acme-robotics.com", "sales@acme-robotics.com"],
        "script text is not read"
    );
    assert_eq!(
        got.phones.iter().map(PhoneE164::as_str).collect::<Vec<_>>(),
        ["+14155552671"]
    );
    assert_eq!(got.company_pages, ["linkedin.com/company/acme-robotics"]);
    let profiles: Vec<&str> = got.profile_urls.iter().map(ProfileUrl::canonical).collect();
    assert_eq!(profiles, ["x.com/acmerobotics", "github.com/acme-robotics"]);
    assert!(
        got.websites
            .contains(&"https://partner.example".to_string()),
        "{:?}",
        got.websites
    );
}

#[test]
fn page_meta_reads_title_site_name_and_description() {
    let meta = page_meta(PAGE);
    assert_eq!(
        meta.title.as_deref(),
        Some("Acme Robotics – Warehouse robots that just work")
    );
    assert_eq!(meta.site_name.as_deref(), Some("Acme Robotics"));
    assert_eq!(
        meta.description.as_deref(),
        Some("Acme builds autonomous warehouse robots & fleet software.")
    );
}

#[test]
fn entities_decode() {
    let cases = [
        ("Ren&eacute;e &amp; Co", "Renée & Co"),
        ("a&#64;b.c", "a@b.c"),
        ("&#x4D;&uuml;ller", "Müller"),
        ("&unknown; stays", "&unknown; stays"),
    ];
    for (raw, want) in cases {
        assert_eq!(decode_entities(raw), want, "{raw}");
    }
}

#[test]
fn plain_text_is_not_treated_as_html() {
    assert!(!looks_like_html("a < b and c > d"));
    assert!(looks_like_html("<p>hello</p>"));
}
