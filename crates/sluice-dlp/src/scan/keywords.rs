//! Supporting keywords: the words that raise a validated match's confidence.
//!
//! Indexed once per text from the literal pass (the trigger automaton finds
//! them too, see `scan::literals`); queries are binary searches. A keyword
//! counts only as a whole word (no ASCII letter or digit either side), so
//! `exp` does not fire inside `expect`.

/// The evidence families, one per detector that uses proximity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Keyword {
    Card,
    Ssn,
    Aba,
    Phone,
    Email,
    /// Labels of identifiers that are not personal data (invoice, order,
    /// tracking, account numbers): evidence *against* SSN, ABA and phones.
    IdLabel,
    Sin,
    Nino,
    Aadhaar,
    EsDni,
}

const KINDS: usize = 10;

/// The families that label a number: the nearest one before a number says
/// what the number is.
pub(super) const LABELS: [Keyword; 9] = [
    Keyword::Card,
    Keyword::Ssn,
    Keyword::Aba,
    Keyword::Phone,
    Keyword::IdLabel,
    Keyword::Sin,
    Keyword::Nino,
    Keyword::Aadhaar,
    Keyword::EsDni,
];

fn slot(kind: Keyword) -> usize {
    match kind {
        Keyword::Card => 0,
        Keyword::Ssn => 1,
        Keyword::Aba => 2,
        Keyword::Phone => 3,
        Keyword::Email => 4,
        Keyword::IdLabel => 5,
        Keyword::Sin => 6,
        Keyword::Nino => 7,
        Keyword::Aadhaar => 8,
        Keyword::EsDni => 9,
    }
}

/// Purview's Keyword_cc_verification / Keyword_cc_name / expiration terms and
/// the AWS Macie card words; Keyword_ssn; Keyword_ABA_Routing; phone and email
/// labels as they appear in signatures.
pub(super) const KEYWORDS: &[(&str, Keyword)] = &[
    ("card", Keyword::Card),
    ("cards", Keyword::Card),
    ("cardholder", Keyword::Card),
    ("card number", Keyword::Card),
    ("cardnumber", Keyword::Card),
    ("credit", Keyword::Card),
    ("debit", Keyword::Card),
    ("visa", Keyword::Card),
    ("mastercard", Keyword::Card),
    ("master card", Keyword::Card),
    ("mc", Keyword::Card),
    ("amex", Keyword::Card),
    ("american express", Keyword::Card),
    ("discover", Keyword::Card),
    ("jcb", Keyword::Card),
    ("diners", Keyword::Card),
    ("diners club", Keyword::Card),
    ("maestro", Keyword::Card),
    ("unionpay", Keyword::Card),
    ("rupay", Keyword::Card),
    ("carte bancaire", Keyword::Card),
    ("cvv", Keyword::Card),
    ("cvv2", Keyword::Card),
    ("cvc", Keyword::Card),
    ("cvc2", Keyword::Card),
    ("cvn", Keyword::Card),
    ("cid", Keyword::Card),
    ("security code", Keyword::Card),
    ("card verification", Keyword::Card),
    ("pin block", Keyword::Card),
    ("exp", Keyword::Card),
    ("expiry", Keyword::Card),
    ("expiration", Keyword::Card),
    ("expires", Keyword::Card),
    ("valid thru", Keyword::Card),
    ("pan", Keyword::Card),
    ("ccn", Keyword::Card),
    ("cc", Keyword::Card),
    ("cc#", Keyword::Card),
    ("kreditkarte", Keyword::Card),
    ("karte", Keyword::Card),
    ("carte", Keyword::Card),
    ("tarjeta", Keyword::Card),
    ("cartão", Keyword::Card),
    ("クレジット", Keyword::Card),
    ("カード", Keyword::Card),
    ("信用卡", Keyword::Card),
    ("卡号", Keyword::Card),
    ("ssn", Keyword::Ssn),
    ("ssns", Keyword::Ssn),
    ("ssn#", Keyword::Ssn),
    ("ss#", Keyword::Ssn),
    ("sss#", Keyword::Ssn),
    ("social security", Keyword::Ssn),
    ("social security number", Keyword::Ssn),
    ("social security no", Keyword::Ssn),
    ("social security #", Keyword::Ssn),
    ("soc sec", Keyword::Ssn),
    ("ssa number", Keyword::Ssn),
    ("aba", Keyword::Aba),
    ("aba#", Keyword::Aba),
    ("aba number", Keyword::Aba),
    ("abarouting", Keyword::Aba),
    ("abarouting#", Keyword::Aba),
    ("abaroutingnumber", Keyword::Aba),
    ("bankrouting#", Keyword::Aba),
    ("bankroutingnumber", Keyword::Aba),
    ("routing", Keyword::Aba),
    ("routing number", Keyword::Aba),
    ("routing transit number", Keyword::Aba),
    ("rtn", Keyword::Aba),
    ("phone", Keyword::Phone),
    ("phones", Keyword::Phone),
    ("telephone", Keyword::Phone),
    ("tel", Keyword::Phone),
    ("mobile", Keyword::Phone),
    ("mob", Keyword::Phone),
    ("cell", Keyword::Phone),
    ("cellphone", Keyword::Phone),
    ("call", Keyword::Phone),
    ("fax", Keyword::Phone),
    ("ph", Keyword::Phone),
    ("whatsapp", Keyword::Phone),
    ("telefon", Keyword::Phone),
    ("telefono", Keyword::Phone),
    ("téléphone", Keyword::Phone),
    ("email", Keyword::Email),
    ("e-mail", Keyword::Email),
    ("emails", Keyword::Email),
    ("mailto", Keyword::Email),
    ("invoice", Keyword::IdLabel),
    ("invoice#", Keyword::IdLabel),
    ("inv", Keyword::IdLabel),
    ("inv#", Keyword::IdLabel),
    ("order", Keyword::IdLabel),
    ("order#", Keyword::IdLabel),
    ("orders", Keyword::IdLabel),
    ("po", Keyword::IdLabel),
    ("po#", Keyword::IdLabel),
    ("purchase order", Keyword::IdLabel),
    ("tracking", Keyword::IdLabel),
    ("tracking#", Keyword::IdLabel),
    ("shipment", Keyword::IdLabel),
    ("parcel", Keyword::IdLabel),
    ("ref", Keyword::IdLabel),
    ("ref#", Keyword::IdLabel),
    ("reference", Keyword::IdLabel),
    ("account", Keyword::IdLabel),
    ("account#", Keyword::IdLabel),
    ("acct", Keyword::IdLabel),
    ("acct#", Keyword::IdLabel),
    ("customer", Keyword::IdLabel),
    ("client", Keyword::IdLabel),
    ("member", Keyword::IdLabel),
    ("policy", Keyword::IdLabel),
    ("claim", Keyword::IdLabel),
    ("case", Keyword::IdLabel),
    ("ticket", Keyword::IdLabel),
    ("incident", Keyword::IdLabel),
    ("sku", Keyword::IdLabel),
    ("serial", Keyword::IdLabel),
    ("item", Keyword::IdLabel),
    ("part", Keyword::IdLabel),
    ("product", Keyword::IdLabel),
    ("transaction", Keyword::IdLabel),
    ("txn", Keyword::IdLabel),
    ("confirmation", Keyword::IdLabel),
    ("booking", Keyword::IdLabel),
    ("reservation", Keyword::IdLabel),
    ("receipt", Keyword::IdLabel),
    ("voucher", Keyword::IdLabel),
    ("batch", Keyword::IdLabel),
    ("lot", Keyword::IdLabel),
    ("id", Keyword::IdLabel),
    ("id#", Keyword::IdLabel),
    ("employee id", Keyword::IdLabel),
    ("isbn", Keyword::IdLabel),
    ("zip", Keyword::IdLabel),
    ("build", Keyword::IdLabel),
    ("version", Keyword::IdLabel),
    ("sin", Keyword::Sin),
    ("sin#", Keyword::Sin),
    ("social insurance", Keyword::Sin),
    ("social insurance number", Keyword::Sin),
    ("assurance sociale", Keyword::Sin),
    ("nas", Keyword::Sin),
    ("national insurance", Keyword::Nino),
    ("national insurance number", Keyword::Nino),
    ("nino", Keyword::Nino),
    ("ni number", Keyword::Nino),
    ("ni no", Keyword::Nino),
    ("nin", Keyword::Nino),
    ("aadhaar", Keyword::Aadhaar),
    ("aadhar", Keyword::Aadhaar),
    ("uidai", Keyword::Aadhaar),
    ("uid", Keyword::Aadhaar),
    ("आधार", Keyword::Aadhaar),
    ("dni", Keyword::EsDni),
    ("nie", Keyword::EsDni),
    ("nif", Keyword::EsDni),
    ("documento nacional", Keyword::EsDni),
    ("documento nacional de identidad", Keyword::EsDni),
];

/// Word-bounded keyword positions of one text, by family, in text order.
pub(super) struct KeywordIndex {
    starts: [Vec<usize>; KINDS],
    /// The labels (every family in [`LABELS`]) together, in text order: the
    /// last one before a number is one search, not one per family.
    labels: Vec<(usize, Keyword)>,
}

impl KeywordIndex {
    /// The index of `text` from its keyword matches (start, end, index into
    /// [`KEYWORDS`]), leftmost-longest and in text order.
    pub(super) fn build(text: &str, matches: &[(usize, usize, usize)]) -> Self {
        let b = text.as_bytes();
        let mut starts: [Vec<usize>; KINDS] = Default::default();
        let mut labels = Vec::with_capacity(matches.len());
        for &(start, end, keyword) in matches {
            let before = start.checked_sub(1).map(|i| b[i]);
            // `cc#4111...` still counts: a keyword ending in punctuation needs no
            // boundary after it.
            let after = b.get(end).copied().filter(|_| b[end - 1].is_ascii_alphanumeric());
            if before.is_some_and(|c| c.is_ascii_alphanumeric())
                || after.is_some_and(|c| c.is_ascii_alphanumeric())
            {
                continue;
            }
            let kind = KEYWORDS[keyword].1;
            starts[slot(kind)].push(start);
            if LABELS.contains(&kind) {
                labels.push((start, kind));
            }
        }
        KeywordIndex { starts, labels }
    }

    /// The family of the label starting last in `lo..hi`, if any.
    pub(super) fn last_label_in(&self, lo: usize, hi: usize) -> Option<(Keyword, usize)> {
        let i = self.labels.partition_point(|&(s, _)| s < hi);
        self.labels[..i]
            .last()
            .filter(|&&(s, _)| s >= lo)
            .map(|&(s, kind)| (kind, s))
    }

    /// A keyword of `kind` starts within `lo..hi`.
    pub(super) fn any_in(&self, kind: Keyword, lo: usize, hi: usize) -> bool {
        let v = &self.starts[slot(kind)];
        let i = v.partition_point(|&s| s < lo);
        v.get(i).is_some_and(|&s| s < hi)
    }
}
