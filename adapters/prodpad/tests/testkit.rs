//! The shared adapter test kit (`testkit`) run against the ProdPad simulator, in scim mode and
//! in rest mode.

mod common;

use std::sync::Arc;

use adapter_api::{Adapter, User};
use adapter_prodpad::sim::SimHandle;
use async_trait::async_trait;
use common::*;
use serde_json::{json, Value};
use simkit::{SimFaults, Simulator};
use testkit::{run_all, test_outbound, AttrUpdate, Harness};

struct ProdPadHarness {
    scim: bool,
    sim: SimHandle,
    good: Arc<dyn Adapter>,
    bad: Arc<dyn Adapter>,
}

impl ProdPadHarness {
    async fn new(scim: bool) -> Self {
        let sim = scim_sim().await;
        let (mode, base) = if scim { ("scim", sim.scim_base().unwrap()) } else { ("rest", sim.rest_base()) };
        let build = |key: &str| {
            let cfg = json!({"mode": mode, "base_url": base, "api_key": key});
            adapter_prodpad::build("prodpad-kit", cfg, test_outbound()).unwrap()
        };
        let (good, bad) = (build(KEY), build("not-the-key"));
        ProdPadHarness { scim, sim, good, bad }
    }
}

fn sim_field(rec: &Value, key: &str, want: &str) -> bool {
    rec.get(key).and_then(Value::as_str) == Some(want)
}

#[async_trait]
impl Harness for ProdPadHarness {
    fn adapter(&self) -> Arc<dyn Adapter> {
        self.good.clone()
    }

    fn bad_credential_adapter(&self) -> Arc<dyn Adapter> {
        self.bad.clone()
    }

    async fn set_faults(&self, faults: SimFaults) {
        self.sim.set_faults(faults);
    }

    async fn sim_user(&self, user_name: &str) -> Option<Value> {
        self.sim.user_by_user_name(user_name).and_then(|u| serde_json::to_value(u).ok())
    }

    fn sample_user(&self, user_name: &str) -> User {
        user(user_name, "Kit", "User", None)
    }

    /// scim mode: the attributes ProdPad SCIM keeps, each checked at the simulator. rest mode
    /// (`update_users=false`, so the kit expects each one refused and the record untouched): what ProdPad
    /// REST keeps — the name, and the email, which is the userName there.
    fn updates(&self) -> Vec<AttrUpdate> {
        let mut list = vec![
            AttrUpdate {
                name: "name.givenName",
                apply: |u| u.name.get_or_insert_with(Default::default).given_name = Some("Kitty".into()),
                check: |rec| sim_field(rec, "given_name", "Kitty"),
            },
            AttrUpdate {
                name: "name.familyName",
                apply: |u| u.name.get_or_insert_with(Default::default).family_name = Some("Userton".into()),
                check: |rec| sim_field(rec, "family_name", "Userton"),
            },
        ];
        if self.scim {
            list.push(AttrUpdate {
                name: "emails[type eq \"work\"].value",
                apply: |u| u.emails[0].value = Some(format!("alt.{}", u.user_name)),
                check: |rec| {
                    let user_name = rec.get("user_name").and_then(Value::as_str).unwrap_or_default();
                    sim_field(rec, "email", &format!("alt.{user_name}"))
                },
            });
        } else {
            list.push(AttrUpdate {
                name: "userName (ProdPad's email)",
                apply: |u| u.user_name = format!("alt.{}", u.user_name),
                check: |rec| sim_field(rec, "email", "never checked: rest mode refuses updates"),
            });
        }
        list
    }
}

#[tokio::test]
async fn shared_test_kit_scim_mode() {
    let h = ProdPadHarness::new(true).await;
    run_all(&h).await;
}

#[tokio::test]
async fn shared_test_kit_rest_mode() {
    let h = ProdPadHarness::new(false).await;
    run_all(&h).await;
}
