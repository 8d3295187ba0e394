//! The network's standard documents (`../shared/reference/net4u-documents.md`): their type codes,
//! which role may send each, and which kinds of facility may receive it. The write endpoint
//! enforces these rules; they are typed here so that changing them is a code review.
//!
//! A note between carers is a `Communication` (category [`NOTE`]); a standard document is a
//! `DocumentReference` typed with [`DOCUMENT_TYPE_SYSTEM`].

/// The code system of the network's document types.
pub const DOCUMENT_TYPE_SYSTEM: &str = "http://tsunagi.example.jp/fhir/CodeSystem/network-document";

/// The code system of Communication categories Tsunagi writes.
pub const COMMUNICATION_CATEGORY_SYSTEM: &str =
    "http://tsunagi.example.jp/fhir/CodeSystem/communication-category";

/// The category of a note between carers (the network's "mail").
pub const NOTE: &str = "note";

/// The extension naming a document's intended recipient (IHE MHD's `ihe-intendedRecipient`):
/// a DocumentReference has no recipient element of its own.
pub const INTENDED_RECIPIENT: &str =
    "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-intendedRecipient";

/// One standard document type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DocumentType {
    /// Code in [`DOCUMENT_TYPE_SYSTEM`].
    pub code: &'static str,
    /// Japanese name, as the network writes it.
    pub display: &'static str,
    /// Roles (`tsunagi_auth::Role` codes) that may send it.
    pub senders: &'static [&'static str],
    /// Facility kinds that may receive it.
    pub recipients: &'static [&'static str],
}

const MEDICAL: &[&str] = &["hospital", "clinic", "dental-clinic"];

/// Every document type of the network.
pub const DOCUMENT_TYPES: &[DocumentType] = &[
    DocumentType {
        code: "pre-admission-status",
        display: "入院前状況報告書",
        senders: &["care-manager"],
        recipients: MEDICAL,
    },
    DocumentType {
        code: "discharge-information",
        display: "退院・退所情報提供書",
        senders: &["care-manager"],
        recipients: &["hospital", "clinic", "dental-clinic", "nursing-home"],
    },
    DocumentType {
        code: "service-use-confirmation",
        display: "サービス利用確認書",
        senders: &["care-manager"],
        recipients: MEDICAL,
    },
    DocumentType {
        code: "service-meeting-inquiry",
        display: "サービス担当者会議に対する照会（依頼）書",
        senders: &["care-manager"],
        recipients: MEDICAL,
    },
    DocumentType {
        code: "service-application-confirmation",
        display: "サービス利用申込確認書",
        senders: &["care-manager"],
        recipients: &["home-nursing", "nursing-home", "hospital", "clinic"],
    },
    DocumentType {
        code: "user-information-contact",
        display: "利用者情報提供連絡票",
        senders: &["care-manager"],
        recipients: MEDICAL,
    },
    DocumentType {
        code: "ltc-user-information",
        display: "介護保険利用者情報提供書",
        senders: &["doctor"],
        recipients: &["care-manager-office"],
    },
    DocumentType {
        code: "information-sharing-request",
        display: "Net4U情報共有依頼書",
        senders: &["care-manager"],
        recipients: MEDICAL,
    },
    DocumentType {
        code: "medical-nursing-liaison",
        display: "医療と看護の連絡用文書",
        senders: &["doctor", "nurse"],
        recipients: &[
            "hospital",
            "clinic",
            "dental-clinic",
            "home-nursing",
            "nursing-home",
        ],
    },
];

/// The document type of `code`.
pub fn document_type(code: &str) -> Option<&'static DocumentType> {
    DOCUMENT_TYPES.iter().find(|kind| kind.code == code)
}

/// The table of [`DOCUMENT_TYPES`] as Markdown: who may send which document to which kind of
/// facility (`docs/documents.md` shows it; a test keeps the two equal).
pub fn markdown_table() -> String {
    let mut table = String::from(
        "| code | document | sent by (role) | to (facility kind) |\n| --- | --- | --- | --- |\n",
    );
    for kind in DOCUMENT_TYPES {
        table.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            kind.code,
            kind.display,
            kind.senders.join(", "),
            kind.recipients.join(", ")
        ));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_document_of_the_network_has_one_code_a_sender_and_recipients() {
        assert_eq!(DOCUMENT_TYPES.len(), 9);
        for (index, kind) in DOCUMENT_TYPES.iter().enumerate() {
            assert!(!kind.senders.is_empty() && !kind.recipients.is_empty());
            assert!(
                DOCUMENT_TYPES[index + 1..]
                    .iter()
                    .all(|other| other.code != kind.code)
            );
            assert_eq!(document_type(kind.code), Some(kind));
        }
        let liaison = document_type("medical-nursing-liaison");
        assert_eq!(
            liaison.map(|kind| kind.senders),
            Some(&["doctor", "nurse"][..])
        );
        assert!(document_type("unknown").is_none());
    }
}
