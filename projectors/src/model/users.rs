//! Projection `users`: `read.users` (with orders placed and money spent) and
//! `read.user_orders`, what it needs to know of each order to keep those.

use std::collections::{BTreeMap, BTreeSet};

use domain::event::AnyEvent;
use domain::ids::StreamType;
use domain::order::OrderEvent;
use domain::user::UserEvent;
use rust_decimal::Decimal;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::event::ProjectionEvent;
use crate::projection::{expect_next, ApplyError};
use crate::writes::{params, Writes};

/// One row of `read.users`.
#[derive(Debug, Clone)]
struct User {
    email: String,
    name: String,
    active: bool,
    orders_placed: i32,
    total_spent: Decimal,
    version: i64,
}

/// One row of `read.user_orders`.
#[derive(Debug, Clone)]
struct UserOrder {
    user_id: Uuid,
    total: Decimal,
    paid: bool,
}

pub(crate) async fn plan(
    reader: &impl GenericClient,
    schema: &str,
    events: &[ProjectionEvent],
    writes: &mut Writes,
) -> Result<(), ApplyError> {
    let mut user_ids = BTreeSet::new();
    let mut order_ids = BTreeSet::new();
    for event in events {
        match (&event.stream_type, &event.decoded) {
            (Some(StreamType::User), _) => user_ids.extend(event.aggregate_id),
            (
                Some(StreamType::Order),
                Ok(AnyEvent::Order(OrderEvent::OrderPlaced { user_id, .. })),
            ) => {
                user_ids.insert(user_id.as_uuid());
            }
            (Some(StreamType::Order), _) => order_ids.extend(event.aggregate_id),
            _ => {}
        }
    }
    if user_ids.is_empty() && order_ids.is_empty() {
        return Ok(());
    }

    let mut orders: BTreeMap<Uuid, UserOrder> = BTreeMap::new();
    if !order_ids.is_empty() {
        let ids: Vec<Uuid> = order_ids.into_iter().collect();
        orders = super::load_rows(
            reader,
            &format!("{schema}.user_orders"),
            "order_id, user_id, total::text, paid",
            &ids,
            |row| {
                Ok(UserOrder {
                    user_id: row.get(1),
                    total: super::decimal(row.get::<_, &str>(2))?,
                    paid: row.get(3),
                })
            },
        )
        .await?;
        user_ids.extend(orders.values().map(|order| order.user_id));
    }
    let ids: Vec<Uuid> = user_ids.into_iter().collect();
    let mut users = super::load_rows(
        reader,
        &format!("{schema}.users"),
        "id, email, name, active, orders_placed, total_spent::text, version",
        &ids,
        |row| {
            Ok(User {
                email: row.get(1),
                name: row.get(2),
                active: row.get(3),
                orders_placed: row.get(4),
                total_spent: super::decimal(row.get::<_, &str>(5))?,
                version: row.get(6),
            })
        },
    )
    .await?;
    let (mut changed_users, mut changed_orders) = (BTreeSet::new(), BTreeSet::new());

    for (index, event) in events.iter().enumerate() {
        let poison = |reason: String| ApplyError::poison(events, index, reason);
        match event.stream_type {
            Some(StreamType::User) => {
                let (id, user_event) = super::decoded(event, "a user", |any| match any {
                    AnyEvent::User(user_event) => Some(user_event),
                    _ => None,
                })
                .map_err(poison)?;
                expect_next(users.get(&id).map_or(0, |u| u.version), event.version)
                    .map_err(poison)?;
                match user_event {
                    UserEvent::UserRegistered { email, name, .. } => {
                        users.insert(
                            id,
                            User {
                                email: email.as_str().to_owned(),
                                name: name.as_str().to_owned(),
                                active: true,
                                orders_placed: 0,
                                total_spent: Decimal::ZERO,
                                version: 0,
                            },
                        );
                    }
                    UserEvent::UserRenamed { name } => {
                        users
                            .get_mut(&id)
                            .ok_or_else(|| poison("user does not exist".into()))?
                            .name = name.as_str().to_owned();
                    }
                    UserEvent::UserDeactivated => {
                        users
                            .get_mut(&id)
                            .ok_or_else(|| poison("user does not exist".into()))?
                            .active = false;
                    }
                }
                if let Some(user) = users.get_mut(&id) {
                    user.version = event.version as i64;
                }
                changed_users.insert(id);
            }
            Some(StreamType::Order) => {
                let (id, order_event) = super::decoded(event, "an order", |any| match any {
                    AnyEvent::Order(order_event) => Some(order_event),
                    _ => None,
                })
                .map_err(poison)?;
                match order_event {
                    OrderEvent::OrderPlaced { user_id, total, .. } => {
                        if orders.contains_key(&id) {
                            return Err(poison("order was already counted".into()));
                        }
                        let user = users
                            .get_mut(&user_id.as_uuid())
                            .ok_or_else(|| poison(format!("user {user_id} does not exist")))?;
                        user.orders_placed += 1;
                        orders.insert(
                            id,
                            UserOrder {
                                user_id: user_id.as_uuid(),
                                total: total.amount(),
                                paid: false,
                            },
                        );
                        changed_users.insert(user_id.as_uuid());
                        changed_orders.insert(id);
                    }
                    OrderEvent::OrderPaid { .. } | OrderEvent::OrderCancelled { .. } => {
                        let order = orders
                            .get_mut(&id)
                            .ok_or_else(|| poison("order was never placed".into()))?;
                        let user = users.get_mut(&order.user_id).ok_or_else(|| {
                            poison(format!("user {} does not exist", order.user_id))
                        })?;
                        match (order_event, order.paid) {
                            (OrderEvent::OrderPaid { .. }, false) => {
                                order.paid = true;
                                user.total_spent += order.total;
                            }
                            (OrderEvent::OrderPaid { .. }, true) => {
                                return Err(poison("order was already paid".into()));
                            }
                            (_, true) => {
                                // cancelled after payment: no longer money spent
                                order.paid = false;
                                user.total_spent -= order.total;
                            }
                            (_, false) => {}
                        }
                        changed_users.insert(order.user_id);
                        changed_orders.insert(id);
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }

    if !changed_users.is_empty() {
        let (mut id, mut email, mut name, mut active, mut placed, mut spent, mut version) = (
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        for key in changed_users {
            let Some(user) = users.remove(&key) else {
                continue;
            };
            id.push(key);
            email.push(user.email);
            name.push(user.name);
            active.push(user.active);
            placed.push(user.orders_placed);
            spent.push(user.total_spent.to_string());
            version.push(user.version);
        }
        writes.push(
            format!(
                "insert into {schema}.users (id, email, name, active, orders_placed, total_spent, version)
                 select id, email, name, active, orders_placed, total_spent::numeric, version
                   from unnest($1::uuid[], $2::text[], $3::text[], $4::bool[], $5::int4[], $6::text[], $7::int8[])
                     as r(id, email, name, active, orders_placed, total_spent, version)
                 on conflict (id) do update
                   set email = excluded.email, name = excluded.name, active = excluded.active,
                       orders_placed = excluded.orders_placed, total_spent = excluded.total_spent,
                       version = excluded.version"
            ),
            params![id, email, name, active, placed, spent, version],
        );
    }
    if !changed_orders.is_empty() {
        let (mut id, mut user_id, mut total, mut paid) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for key in changed_orders {
            let Some(order) = orders.remove(&key) else {
                continue;
            };
            id.push(key);
            user_id.push(order.user_id);
            total.push(order.total.to_string());
            paid.push(order.paid);
        }
        writes.push(
            format!(
                "insert into {schema}.user_orders (order_id, user_id, total, paid)
                 select order_id, user_id, total::numeric, paid
                   from unnest($1::uuid[], $2::uuid[], $3::text[], $4::bool[]) as r(order_id, user_id, total, paid)
                 on conflict (order_id) do update set paid = excluded.paid"
            ),
            params![id, user_id, total, paid],
        );
    }
    Ok(())
}
