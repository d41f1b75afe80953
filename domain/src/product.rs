//! The product aggregate: catalogue data and stock.
//!
//! Stock is tracked as `on_hand` (units in the warehouse) and `reserved`
//! (units promised to pending or confirmed orders); `available = on_hand -
//! reserved` is what a new order may take. Reservations are kept per order so
//! that releasing and shipping are idempotent and use the reserved quantity,
//! not a quantity the caller might get wrong. An entry leaves the map when it
//! is released or shipped, so the map only holds open reservations.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::aggregate::{Aggregate, ErrorKind, ErrorKindOf};
use crate::event::{self, ClaimKind, UniqueClaim};
use crate::ids::{OrderId, ProductId, StreamType};
use crate::order::RejectReason;
use crate::values::{Money, Name, Quantity, Sku};

/// The product aggregate (see [`Aggregate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Product;

/// What can be asked of a product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProductCommand {
    /// Add the product to the catalogue.
    Create {
        /// The new product's id, chosen by the caller.
        product_id: ProductId,
        /// Its SKU; must be unique (enforced by the store's claim).
        sku: Sku,
        /// Its display name.
        name: Name,
        /// Its unit price.
        price: Money,
        /// Units on hand to start with (may be 0).
        stock: u32,
    },
    /// Add units to the stock on hand.
    Restock {
        /// How many units arrived.
        quantity: Quantity,
    },
    /// Set a new unit price. Orders already placed keep the price they captured.
    ChangePrice {
        /// The new unit price.
        price: Money,
    },
    /// Take the product off sale. Existing reservations can still be released
    /// or shipped.
    Discontinue,
    /// Hold `quantity` units for an order (the saga's first step).
    ReserveStock {
        /// The order the units are held for.
        order_id: OrderId,
        /// How many units.
        quantity: Quantity,
    },
    /// Give back an order's reservation, whatever its size.
    ReleaseStock {
        /// The order whose reservation is released.
        order_id: OrderId,
    },
    /// The order's reserved units leave the warehouse.
    ShipStock {
        /// The order whose reservation is shipped.
        order_id: OrderId,
    },
}

/// What happened to a product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ProductEvent {
    /// The product was added to the catalogue.
    ProductCreated {
        /// The product's id.
        product_id: ProductId,
        /// The normalised SKU.
        sku: Sku,
        /// The display name.
        name: Name,
        /// The unit price.
        price: Money,
        /// Units on hand at creation.
        stock: u32,
    },
    /// Units were added to the stock on hand.
    ProductRestocked {
        /// How many units.
        quantity: Quantity,
    },
    /// The unit price changed.
    ProductPriceChanged {
        /// The new unit price.
        price: Money,
    },
    /// The product was taken off sale.
    ProductDiscontinued,
    /// Units were reserved for an order.
    StockReserved {
        /// The order holding the reservation.
        order_id: OrderId,
        /// How many units.
        quantity: Quantity,
    },
    /// An order's reservation was given back.
    StockReleased {
        /// The order whose reservation ended.
        order_id: OrderId,
        /// How many units were released (the whole reservation).
        quantity: Quantity,
    },
    /// An order's reserved units were shipped: they leave `on_hand` and
    /// `reserved` together.
    StockShipped {
        /// The order shipped.
        order_id: OrderId,
        /// How many units left the warehouse.
        quantity: Quantity,
    },
}

/// A product in the catalogue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedProduct {
    /// The product's id.
    pub product_id: ProductId,
    /// The normalised SKU.
    pub sku: Sku,
    /// The display name.
    pub name: Name,
    /// The current unit price, captured by orders when they are placed.
    pub price: Money,
    /// Units in the warehouse, reserved or not.
    pub on_hand: u32,
    /// Units promised to orders; always the sum of `reservations`, never above `on_hand`.
    pub reserved: u32,
    /// Open reservations by order.
    pub reservations: BTreeMap<OrderId, u32>,
    /// True once taken off sale; no new reservations.
    pub discontinued: bool,
}

impl CreatedProduct {
    /// Units a new order may reserve.
    pub fn available(&self) -> u32 {
        self.on_hand.saturating_sub(self.reserved)
    }
}

/// A product's state: nothing until created.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ProductState {
    /// No `ProductCreated` yet.
    #[default]
    NotCreated,
    /// In the catalogue (possibly discontinued).
    Created(CreatedProduct),
}

impl ProductState {
    /// The product, if created.
    pub fn product(&self) -> Option<&CreatedProduct> {
        match self {
            ProductState::NotCreated => None,
            ProductState::Created(p) => Some(p),
        }
    }

    /// Units available to new orders (0 when the product does not exist).
    pub fn available(&self) -> u32 {
        self.product().map_or(0, CreatedProduct::available)
    }

    /// Units on hand (0 when the product does not exist).
    pub fn on_hand(&self) -> u32 {
        self.product().map_or(0, |p| p.on_hand)
    }

    /// Units reserved (0 when the product does not exist).
    pub fn reserved(&self) -> u32 {
        self.product().map_or(0, |p| p.reserved)
    }

    /// The units reserved for `order_id`, if any.
    pub fn reservation(&self, order_id: OrderId) -> Option<u32> {
        self.product()
            .and_then(|p| p.reservations.get(&order_id).copied())
    }
}

/// Why a product command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProductError {
    /// `Create` on a product that exists.
    #[error("product already exists")]
    AlreadyCreated,
    /// Any other command on a product that does not exist.
    #[error("product not found")]
    NotFound,
    /// Restock, price change, discontinue or a new reservation on a
    /// discontinued product.
    #[error("product is discontinued")]
    Discontinued,
    /// A reservation larger than what is available.
    #[error("not enough stock: {requested} requested, {available} available")]
    InsufficientStock {
        /// Units asked for.
        requested: u32,
        /// Units available at the time.
        available: u32,
    },
    /// `ShipStock` for an order that holds no reservation on this product.
    #[error("order {0} holds no reservation on this product")]
    NoReservation(OrderId),
    /// A restock would push `on_hand` past what a `u32` holds.
    #[error("restock would exceed the maximum stock level")]
    StockOverflow,
}

impl ProductError {
    /// The order rejection reason this refusal stands for, when it refused a
    /// reservation: how the saga turns a product error into `OrderRejected`.
    pub fn reject_reason(&self) -> Option<RejectReason> {
        match self {
            ProductError::Discontinued => Some(RejectReason::ProductDiscontinued),
            ProductError::InsufficientStock { .. } => Some(RejectReason::InsufficientStock),
            _ => None,
        }
    }
}

impl ErrorKindOf for ProductError {
    fn kind(&self) -> ErrorKind {
        match self {
            ProductError::AlreadyCreated => ErrorKind::Duplicate,
            ProductError::NotFound => ErrorKind::NotFound,
            ProductError::Discontinued
            | ProductError::InsufficientStock { .. }
            | ProductError::NoReservation(_) => ErrorKind::InvalidTransition,
            ProductError::StockOverflow => ErrorKind::Validation,
        }
    }
}

impl Aggregate for Product {
    type State = ProductState;
    type Command = ProductCommand;
    type Event = ProductEvent;
    type Error = ProductError;

    fn decide(
        state: &ProductState,
        command: ProductCommand,
    ) -> Result<Vec<ProductEvent>, ProductError> {
        use ProductCommand as C;
        use ProductEvent as E;

        let p = match state {
            ProductState::NotCreated => {
                return match command {
                    C::Create {
                        product_id,
                        sku,
                        name,
                        price,
                        stock,
                    } => Ok(vec![E::ProductCreated {
                        product_id,
                        sku,
                        name,
                        price,
                        stock,
                    }]),
                    _ => Err(ProductError::NotFound),
                }
            }
            ProductState::Created(p) => p,
        };
        match command {
            C::Create { .. } => Err(ProductError::AlreadyCreated),
            C::Restock { .. } | C::ChangePrice { .. } | C::Discontinue if p.discontinued => {
                Err(ProductError::Discontinued)
            }
            C::Restock { quantity } => match p.on_hand.checked_add(quantity.get()) {
                Some(_) => Ok(vec![E::ProductRestocked { quantity }]),
                None => Err(ProductError::StockOverflow),
            },
            // Same price: already satisfied, no event.
            C::ChangePrice { price } if price == p.price => Ok(vec![]),
            C::ChangePrice { price } => Ok(vec![E::ProductPriceChanged { price }]),
            C::Discontinue => Ok(vec![E::ProductDiscontinued]),
            // Checked before `discontinued`: a retried reservation that already
            // went through must succeed even if the product was discontinued
            // in between, or the saga would reject an order holding stock.
            C::ReserveStock { order_id, .. } if p.reservations.contains_key(&order_id) => {
                Ok(vec![])
            }
            C::ReserveStock { .. } if p.discontinued => Err(ProductError::Discontinued),
            C::ReserveStock { order_id, quantity } => {
                if quantity.get() > p.available() {
                    Err(ProductError::InsufficientStock {
                        requested: quantity.get(),
                        available: p.available(),
                    })
                } else {
                    Ok(vec![E::StockReserved { order_id, quantity }])
                }
            }
            // Releasing what is not reserved is already satisfied.
            C::ReleaseStock { order_id } => Ok(reservation_of(p, order_id)
                .map(|quantity| E::StockReleased { order_id, quantity })
                .into_iter()
                .collect()),
            C::ShipStock { order_id } => match reservation_of(p, order_id) {
                Some(quantity) => Ok(vec![E::StockShipped { order_id, quantity }]),
                None => Err(ProductError::NoReservation(order_id)),
            },
        }
    }

    fn evolve(state: ProductState, event: &ProductEvent) -> ProductState {
        use ProductEvent as E;

        let mut p = match (state, event) {
            (
                ProductState::NotCreated,
                E::ProductCreated {
                    product_id,
                    sku,
                    name,
                    price,
                    stock,
                },
            ) => {
                return ProductState::Created(CreatedProduct {
                    product_id: *product_id,
                    sku: sku.clone(),
                    name: name.clone(),
                    price: *price,
                    on_hand: *stock,
                    reserved: 0,
                    reservations: BTreeMap::new(),
                    discontinued: false,
                });
            }
            (ProductState::Created(p), _) => p,
            (state, _) => return state,
        };
        // Saturating arithmetic: `decide` never produces events that would
        // over- or underflow, and a corrupted stream must not panic a reader.
        match event {
            E::ProductCreated { .. } => {}
            E::ProductRestocked { quantity } => {
                p.on_hand = p.on_hand.saturating_add(quantity.get());
            }
            E::ProductPriceChanged { price } => p.price = *price,
            E::ProductDiscontinued => p.discontinued = true,
            E::StockReserved { order_id, quantity } => {
                let held = p.reservations.entry(*order_id).or_insert(0);
                *held = held.saturating_add(quantity.get());
                p.reserved = p.reserved.saturating_add(quantity.get());
            }
            E::StockReleased { order_id, quantity } => {
                p.reservations.remove(order_id);
                p.reserved = p.reserved.saturating_sub(quantity.get());
            }
            E::StockShipped { order_id, quantity } => {
                p.reservations.remove(order_id);
                p.reserved = p.reserved.saturating_sub(quantity.get());
                p.on_hand = p.on_hand.saturating_sub(quantity.get());
            }
        }
        ProductState::Created(p)
    }
}

/// The order's open reservation as a `Quantity` (entries are never 0).
fn reservation_of(p: &CreatedProduct, order_id: OrderId) -> Option<Quantity> {
    p.reservations
        .get(&order_id)
        .and_then(|n| Quantity::new(*n).ok())
}

event::tagged_domain_event!(
    ProductEvent,
    StreamType::Product,
    [
        ProductCreated,
        ProductRestocked,
        ProductPriceChanged,
        ProductDiscontinued,
        StockReserved,
        StockReleased,
        StockShipped,
    ],
    {
        /// Creating takes the SKU. Discontinuing keeps it, so an old SKU cannot
        /// come back as a different product in reports and invoices.
        fn unique_claims(&self) -> Vec<UniqueClaim> {
            match self {
                ProductEvent::ProductCreated { sku, .. } => {
                    vec![UniqueClaim::take(ClaimKind::Sku, sku.as_str())]
                }
                _ => vec![],
            }
        }
    },
);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::event::{ClaimAction, DomainEvent};
    use crate::testing::given;
    use uuid::Uuid;

    fn pid() -> ProductId {
        ProductId::new(Uuid::from_u128(10))
    }
    fn order(n: u128) -> OrderId {
        OrderId::new(Uuid::from_u128(100 + n))
    }
    fn q(n: u32) -> Quantity {
        Quantity::new(n).unwrap()
    }
    fn money(s: &str) -> Money {
        Money::parse(s).unwrap()
    }
    fn created(stock: u32) -> ProductEvent {
        ProductEvent::ProductCreated {
            product_id: pid(),
            sku: Sku::parse("SKU-1").unwrap(),
            name: Name::parse("Widget").unwrap(),
            price: money("9.99"),
            stock,
        }
    }
    fn create(stock: u32) -> ProductCommand {
        ProductCommand::Create {
            product_id: pid(),
            sku: Sku::parse("sku-1").unwrap(),
            name: Name::parse("Widget").unwrap(),
            price: money("9.99"),
            stock,
        }
    }
    fn reserved(n: u128, quantity: u32) -> ProductEvent {
        ProductEvent::StockReserved {
            order_id: order(n),
            quantity: q(quantity),
        }
    }

    // Create

    #[test]
    fn create_adds_the_product() {
        let s = given::<Product>([]).when(create(5)).then([created(5)]);
        assert_eq!((s.on_hand(), s.reserved(), s.available()), (5, 0, 5));
    }

    #[test]
    fn create_twice_is_a_duplicate() {
        given::<Product>([created(5)])
            .when(create(5))
            .then_err(ProductError::AlreadyCreated);
    }

    // Restock

    #[test]
    fn restock_adds_to_on_hand() {
        let s = given::<Product>([created(5)])
            .when(ProductCommand::Restock { quantity: q(3) })
            .then([ProductEvent::ProductRestocked { quantity: q(3) }]);
        assert_eq!(s.on_hand(), 8);
    }

    #[test]
    fn restock_unknown_product_is_not_found() {
        given::<Product>([])
            .when(ProductCommand::Restock { quantity: q(3) })
            .then_err(ProductError::NotFound);
    }

    #[test]
    fn restock_discontinued_product_is_refused() {
        given::<Product>([created(5), ProductEvent::ProductDiscontinued])
            .when(ProductCommand::Restock { quantity: q(3) })
            .then_err(ProductError::Discontinued);
    }

    #[test]
    fn restock_past_u32_is_refused() {
        given::<Product>([created(u32::MAX)])
            .when(ProductCommand::Restock { quantity: q(1) })
            .then_err(ProductError::StockOverflow);
    }

    // ChangePrice

    #[test]
    fn change_price_sets_the_price() {
        let s = given::<Product>([created(5)])
            .when(ProductCommand::ChangePrice {
                price: money("12.50"),
            })
            .then([ProductEvent::ProductPriceChanged {
                price: money("12.5"),
            }]);
        assert_eq!(s.product().unwrap().price, money("12.50"));
    }

    #[test]
    fn change_price_to_the_same_price_changes_nothing() {
        given::<Product>([created(5)])
            .when(ProductCommand::ChangePrice {
                price: money("9.990"),
            })
            .then([]);
    }

    #[test]
    fn change_price_unknown_product_is_not_found() {
        given::<Product>([])
            .when(ProductCommand::ChangePrice { price: money("1") })
            .then_err(ProductError::NotFound);
    }

    #[test]
    fn change_price_discontinued_product_is_refused() {
        given::<Product>([created(5), ProductEvent::ProductDiscontinued])
            .when(ProductCommand::ChangePrice { price: money("1") })
            .then_err(ProductError::Discontinued);
    }

    // Discontinue

    #[test]
    fn discontinue_takes_the_product_off_sale() {
        let s = given::<Product>([created(5)])
            .when(ProductCommand::Discontinue)
            .then([ProductEvent::ProductDiscontinued]);
        assert!(s.product().unwrap().discontinued);
    }

    #[test]
    fn discontinue_unknown_product_is_not_found() {
        given::<Product>([])
            .when(ProductCommand::Discontinue)
            .then_err(ProductError::NotFound);
    }

    #[test]
    fn discontinue_twice_is_refused() {
        given::<Product>([created(5), ProductEvent::ProductDiscontinued])
            .when(ProductCommand::Discontinue)
            .then_err(ProductError::Discontinued);
    }

    // ReserveStock

    #[test]
    fn reserve_holds_units_for_the_order() {
        let s = given::<Product>([created(5)])
            .when(ProductCommand::ReserveStock {
                order_id: order(1),
                quantity: q(5),
            })
            .then([reserved(1, 5)]);
        assert_eq!((s.on_hand(), s.reserved(), s.available()), (5, 5, 0));
        assert_eq!(s.reservation(order(1)), Some(5));
    }

    #[test]
    fn reserve_again_for_the_same_order_changes_nothing() {
        given::<Product>([created(5), reserved(1, 2)])
            .when(ProductCommand::ReserveStock {
                order_id: order(1),
                quantity: q(2),
            })
            .then([]);
    }

    #[test]
    fn reserve_again_after_discontinuation_still_succeeds() {
        given::<Product>([
            created(5),
            reserved(1, 2),
            ProductEvent::ProductDiscontinued,
        ])
        .when(ProductCommand::ReserveStock {
            order_id: order(1),
            quantity: q(2),
        })
        .then([]);
    }

    #[test]
    fn reserve_more_than_available_is_refused() {
        given::<Product>([created(5), reserved(1, 4)])
            .when(ProductCommand::ReserveStock {
                order_id: order(2),
                quantity: q(2),
            })
            .then_err(ProductError::InsufficientStock {
                requested: 2,
                available: 1,
            });
    }

    #[test]
    fn reserve_discontinued_product_is_refused() {
        given::<Product>([created(5), ProductEvent::ProductDiscontinued])
            .when(ProductCommand::ReserveStock {
                order_id: order(1),
                quantity: q(1),
            })
            .then_err(ProductError::Discontinued);
    }

    #[test]
    fn reserve_unknown_product_is_not_found() {
        given::<Product>([])
            .when(ProductCommand::ReserveStock {
                order_id: order(1),
                quantity: q(1),
            })
            .then_err(ProductError::NotFound);
    }

    // ReleaseStock

    #[test]
    fn release_gives_back_the_whole_reservation() {
        let s = given::<Product>([created(5), reserved(1, 3), reserved(2, 1)])
            .when(ProductCommand::ReleaseStock { order_id: order(1) })
            .then([ProductEvent::StockReleased {
                order_id: order(1),
                quantity: q(3),
            }]);
        assert_eq!((s.on_hand(), s.reserved(), s.available()), (5, 1, 4));
        assert_eq!(s.reservation(order(1)), None);
    }

    #[test]
    fn release_what_is_not_reserved_changes_nothing() {
        given::<Product>([created(5)])
            .when(ProductCommand::ReleaseStock { order_id: order(1) })
            .then([]);
        given::<Product>([
            created(5),
            reserved(1, 3),
            ProductEvent::StockReleased {
                order_id: order(1),
                quantity: q(3),
            },
        ])
        .when(ProductCommand::ReleaseStock { order_id: order(1) })
        .then([]);
    }

    #[test]
    fn release_on_a_discontinued_product_still_works() {
        given::<Product>([
            created(5),
            reserved(1, 3),
            ProductEvent::ProductDiscontinued,
        ])
        .when(ProductCommand::ReleaseStock { order_id: order(1) })
        .then([ProductEvent::StockReleased {
            order_id: order(1),
            quantity: q(3),
        }]);
    }

    #[test]
    fn release_unknown_product_is_not_found() {
        given::<Product>([])
            .when(ProductCommand::ReleaseStock { order_id: order(1) })
            .then_err(ProductError::NotFound);
    }

    // ShipStock

    #[test]
    fn ship_takes_units_from_on_hand_and_reserved_together() {
        let s = given::<Product>([created(5), reserved(1, 3)])
            .when(ProductCommand::ShipStock { order_id: order(1) })
            .then([ProductEvent::StockShipped {
                order_id: order(1),
                quantity: q(3),
            }]);
        assert_eq!((s.on_hand(), s.reserved(), s.available()), (2, 0, 2));
        assert_eq!(s.reservation(order(1)), None);
    }

    #[test]
    fn ship_without_reservation_is_refused() {
        given::<Product>([created(5)])
            .when(ProductCommand::ShipStock { order_id: order(1) })
            .then_err(ProductError::NoReservation(order(1)));
    }

    #[test]
    fn ship_unknown_product_is_not_found() {
        given::<Product>([])
            .when(ProductCommand::ShipStock { order_id: order(1) })
            .then_err(ProductError::NotFound);
    }

    #[test]
    fn refusals_map_to_reject_reasons_and_kinds() {
        assert_eq!(
            ProductError::Discontinued.reject_reason(),
            Some(RejectReason::ProductDiscontinued)
        );
        assert_eq!(
            ProductError::InsufficientStock {
                requested: 1,
                available: 0
            }
            .reject_reason(),
            Some(RejectReason::InsufficientStock)
        );
        assert_eq!(ProductError::NotFound.reject_reason(), None);
        assert_eq!(ProductError::AlreadyCreated.kind(), ErrorKind::Duplicate);
        assert_eq!(ProductError::NotFound.kind(), ErrorKind::NotFound);
        assert_eq!(ProductError::StockOverflow.kind(), ErrorKind::Validation);
        assert_eq!(
            ProductError::NoReservation(order(1)).kind(),
            ErrorKind::InvalidTransition
        );
    }

    #[test]
    fn creating_claims_the_normalised_sku() {
        assert_eq!(
            created(1).unique_claims(),
            vec![UniqueClaim {
                kind: ClaimKind::Sku,
                value: "SKU-1".into(),
                action: ClaimAction::Take
            }]
        );
    }

    #[test]
    fn state_round_trips_through_json() {
        let s = Product::fold(&[created(5), reserved(1, 2)]);
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(serde_json::from_value::<ProductState>(json).unwrap(), s);
    }
}
