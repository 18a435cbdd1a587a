//! The payment domain model: users, the package catalogue, purchases and
//! payments, exactly as the `payments` schema stores them.
//!
//! Money is a [`Decimal`] that serialises as a string, so no amount ever passes
//! through a binary float. Statuses are closed enums whose string forms match
//! the database `ENUM` values; [`PurchaseStatus::can_transition_to`] is the one
//! place that says which status changes are legal.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// A user who buys packages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Primary key.
    pub id: u64,
    /// Unique e-mail address.
    pub email: String,
    /// Name shown in the UI.
    pub display_name: String,
    /// When the row was inserted (UTC).
    pub created_at: DateTime<Utc>,
    /// When the row last changed (UTC).
    pub updated_at: DateTime<Utc>,
}

/// An entry of the catalogue: something a user can buy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    /// Primary key.
    pub id: u64,
    /// Stable business code, unique.
    pub code: String,
    /// Display name.
    pub name: String,
    /// Unit price.
    #[serde(with = "rust_decimal::serde::str")]
    pub price: Decimal,
    /// ISO-4217 currency code.
    pub currency: String,
    /// Whether it can still be bought.
    pub active: bool,
    /// Row version, incremented on every update.
    pub version: u64,
}

/// Lifecycle of a purchase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PurchaseStatus {
    /// Created, waiting for payment.
    Pending,
    /// Paid in full.
    Paid,
    /// Cancelled before payment.
    Cancelled,
    /// Paid, then refunded.
    Refunded,
}

impl PurchaseStatus {
    /// The database `ENUM` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Paid => "paid",
            Self::Cancelled => "cancelled",
            Self::Refunded => "refunded",
        }
    }

    /// Parses the database `ENUM` value.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "paid" => Some(Self::Paid),
            "cancelled" => Some(Self::Cancelled),
            "refunded" => Some(Self::Refunded),
            _ => None,
        }
    }

    /// Whether a purchase may move from `self` to `next`.
    ///
    /// Pending may be paid or cancelled; paid may be refunded; cancelled and
    /// refunded are final. Staying in the same status is not a transition.
    pub fn can_transition_to(self, next: Self) -> bool {
        matches!(
            (self, next),
            (Self::Pending, Self::Paid)
                | (Self::Pending, Self::Cancelled)
                | (Self::Paid, Self::Refunded)
        )
    }
}

/// A user's purchase of a package: the row the API serves most.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purchase {
    /// Primary key.
    pub id: u64,
    /// The buyer.
    pub user_id: u64,
    /// The package bought.
    pub package_id: u64,
    /// How many units.
    pub quantity: u32,
    /// Total amount (price times quantity at the time of purchase).
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    /// ISO-4217 currency code.
    pub currency: String,
    /// Lifecycle status.
    pub status: PurchaseStatus,
    /// When the purchase was created (UTC).
    pub created_at: DateTime<Utc>,
    /// When it last changed (UTC).
    pub updated_at: DateTime<Utc>,
    /// Row version, starting at 1 and incremented by every update.
    pub version: u64,
}

/// How a payment was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentMethod {
    /// Card payment.
    Card,
    /// Digital wallet.
    Wallet,
    /// Bank transfer.
    BankTransfer,
}

/// Outcome of a payment attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Sent to the provider, no answer yet.
    Pending,
    /// Money captured.
    Succeeded,
    /// Declined or errored.
    Failed,
    /// Captured, then returned.
    Refunded,
}

/// A payment for a purchase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    /// Primary key.
    pub id: u64,
    /// The purchase paid for.
    pub purchase_id: u64,
    /// Amount paid.
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    /// ISO-4217 currency code.
    pub currency: String,
    /// How it was paid.
    pub method: PaymentMethod,
    /// Outcome.
    pub status: PaymentStatus,
    /// The payment provider's reference, once known.
    pub provider_ref: Option<String>,
    /// Client-supplied key that makes a retried request return the first result.
    pub idempotency_key: String,
    /// When the payment was created (UTC).
    pub created_at: DateTime<Utc>,
    /// When it last changed (UTC).
    pub updated_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purchase_status_round_trips_through_its_database_form() {
        for s in [
            PurchaseStatus::Pending,
            PurchaseStatus::Paid,
            PurchaseStatus::Cancelled,
            PurchaseStatus::Refunded,
        ] {
            assert_eq!(PurchaseStatus::parse(s.as_str()), Some(s));
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::json!(s.as_str())
            );
        }
        assert_eq!(PurchaseStatus::parse("PAID"), None);
    }

    #[test]
    fn only_legal_purchase_transitions_are_allowed() {
        use PurchaseStatus::*;
        assert!(Pending.can_transition_to(Paid));
        assert!(Pending.can_transition_to(Cancelled));
        assert!(Paid.can_transition_to(Refunded));
        assert!(!Paid.can_transition_to(Paid), "no paying twice");
        assert!(
            !Cancelled.can_transition_to(Paid),
            "no paying a cancelled purchase"
        );
        assert!(!Refunded.can_transition_to(Pending));
        assert!(!Pending.can_transition_to(Refunded));
    }

    #[test]
    fn money_serialises_as_an_exact_string() {
        let p = Package {
            id: 1,
            code: "gold".into(),
            name: "Gold".into(),
            price: "19.99".parse().unwrap(),
            currency: "EUR".into(),
            active: true,
            version: 3,
        };
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["price"], serde_json::json!("19.99"));
        let back: Package = serde_json::from_value(v).unwrap();
        assert_eq!(back, p);
    }
}
