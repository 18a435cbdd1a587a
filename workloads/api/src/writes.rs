//! The rules of the two writes, without I/O: what a purchase or payment
//! request must contain, how the amount is computed, which purchases can be
//! paid, and how a client's idempotency key is stored. `store` applies them
//! inside MySQL transactions.

use paystream_core::model::{PaymentMethod, PurchaseStatus};
use rust_decimal::Decimal;
use serde::Deserialize;

use crate::problem::Problem;

/// The largest amount `DECIMAL(14,2)` holds.
pub fn max_amount() -> Decimal {
    Decimal::new(99_999_999_999_999, 2)
}

/// Body of `POST /v1/purchases`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPurchase {
    /// The package to buy.
    pub package_id: u64,
    /// Units to buy, at least 1.
    pub quantity: u32,
}

/// Body of `POST /v1/purchases/{id}/payments`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPayment {
    /// How the purchase is paid.
    #[schema(value_type = String, example = "card")]
    pub method: PaymentMethod,
}

impl NewPurchase {
    /// Checks the ranges serde cannot.
    pub fn validate(&self, max_quantity: u32) -> Result<(), Problem> {
        if self.package_id == 0 {
            return Err(Problem::bad_request(
                "invalid-body",
                "package_id must be a positive integer",
            ));
        }
        if self.quantity == 0 || self.quantity > max_quantity {
            return Err(Problem::bad_request(
                "invalid-body",
                format!("quantity must be from 1 to {max_quantity}"),
            ));
        }
        Ok(())
    }
}

/// Price times quantity, if it fits the `amount` column.
pub fn amount(price: Decimal, quantity: u32) -> Option<Decimal> {
    let a = price.checked_mul(Decimal::from(quantity))?;
    (a >= Decimal::ZERO && a <= max_amount()).then(|| a.round_dp(2))
}

/// Why a purchase cannot be paid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayRefusal {
    /// `If-Match` named another version.
    VersionMismatch {
        /// What the client expected.
        expected: u64,
        /// What the row holds.
        current: u64,
    },
    /// The status does not allow paying.
    Transition(PurchaseStatus),
}

impl PayRefusal {
    /// The problem answered for it.
    pub fn problem(self) -> Problem {
        match self {
            Self::VersionMismatch { expected, current } => Problem::precondition_failed(format!(
                "If-Match names version {expected}, but the purchase is at version {current}"
            )),
            Self::Transition(PurchaseStatus::Paid) => {
                Problem::conflict("already-paid", "the purchase is already paid")
            }
            Self::Transition(PurchaseStatus::Cancelled) => {
                Problem::conflict("purchase-cancelled", "a cancelled purchase cannot be paid")
            }
            Self::Transition(s) => Problem::conflict(
                "invalid-transition",
                format!("a {} purchase cannot be paid", s.as_str()),
            ),
        }
    }
}

/// Whether a purchase in `status` at `version` may be paid, given the
/// client's `If-Match` version.
pub fn check_payable(
    status: PurchaseStatus,
    version: u64,
    if_match: Option<u64>,
) -> Result<(), PayRefusal> {
    if let Some(expected) = if_match
        && expected != version
    {
        return Err(PayRefusal::VersionMismatch {
            expected,
            current: version,
        });
    }
    if status.can_transition_to(PurchaseStatus::Paid) {
        Ok(())
    } else {
        Err(PayRefusal::Transition(status))
    }
}

/// The stored form of a payment's idempotency key. `payments.idempotency_key`
/// is unique across all users, so the key is namespaced by the user: two
/// users may pick the same key without seeing each other's payment.
pub fn payment_key(user_id: u64, client_key: &str) -> String {
    format!("u{user_id}:{client_key}")
}

/// The database form of a payment method.
pub fn method_str(m: PaymentMethod) -> &'static str {
    match m {
        PaymentMethod::Card => "card",
        PaymentMethod::Wallet => "wallet",
        PaymentMethod::BankTransfer => "bank_transfer",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purchase_requests_are_validated() {
        let ok = NewPurchase {
            package_id: 1,
            quantity: 2,
        };
        assert!(ok.validate(10).is_ok());
        assert!(
            NewPurchase {
                quantity: 0,
                ..ok.clone()
            }
            .validate(10)
            .is_err()
        );
        assert!(
            NewPurchase {
                quantity: 11,
                ..ok.clone()
            }
            .validate(10)
            .is_err()
        );
        assert!(
            NewPurchase {
                package_id: 0,
                ..ok
            }
            .validate(10)
            .is_err()
        );
        let e = serde_json::from_str::<NewPurchase>(r#"{"package_id":1,"quantity":1,"x":1}"#);
        assert!(e.is_err(), "unknown fields are refused");
    }

    #[test]
    fn amounts_fit_the_column() {
        assert_eq!(
            amount(Decimal::new(1999, 2), 3),
            Some(Decimal::new(5997, 2))
        );
        assert_eq!(amount(max_amount(), 1), Some(max_amount()));
        assert_eq!(amount(max_amount(), 2), None);
        assert_eq!(amount(Decimal::MAX, 2), None);
    }

    #[test]
    fn only_pending_purchases_are_payable() {
        use PurchaseStatus::*;
        assert!(check_payable(Pending, 1, None).is_ok());
        assert!(check_payable(Pending, 1, Some(1)).is_ok());
        assert_eq!(
            check_payable(Pending, 2, Some(1)),
            Err(PayRefusal::VersionMismatch {
                expected: 1,
                current: 2
            })
        );
        assert_eq!(
            check_payable(Paid, 2, None),
            Err(PayRefusal::Transition(Paid))
        );
        assert_eq!(
            check_payable(Cancelled, 2, None),
            Err(PayRefusal::Transition(Cancelled))
        );
        assert_eq!(PayRefusal::Transition(Paid).problem().status, 409);
        assert_eq!(
            PayRefusal::VersionMismatch {
                expected: 1,
                current: 2
            }
            .problem()
            .status,
            412
        );
        assert_eq!(payment_key(7, "abc"), "u7:abc");
        assert_eq!(method_str(PaymentMethod::BankTransfer), "bank_transfer");
    }
}
