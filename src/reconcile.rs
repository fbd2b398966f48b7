//! Reconcile: the vendor's truth against Entra's last desired state (the shadow store). A pass lists the
//! vendor's users (paged, through the app's outbound client as background work, so Entra's calls go first)
//! and finds: linked users whose managed attributes differ (re-enabled, renamed, roles changed at the
//! vendor), linked users the vendor no longer has, leavers (deprovisioned through the gateway) active again
//! at the vendor, and users the gateway never linked. `enforce` pushes Entra's values back; `report` only
//! records. Every finding and every repair is audited (`drift_found`, `drift_repaired`) and counted
//! (`scim_bridge_drift_total`). The same listing feeds the app's `VendorIndex`, which answers Entra's
//! matching queries for users the vendor lacks without asking it per user.
//!
//! Safety rules: a repair runs under the resource's lock and only when the shadow record is the one the
//! pass compared (Entra's own change wins); the vendor's record is read again right before it is repaired
//! (a stale or short listing never causes a write); a user missing from the listing is re-created only
//! after the vendor said 404 for it, through the create path that adopts instead of duplicating; vendor
//! users the gateway never linked are never touched; at most `max_repairs` repairs per pass.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use adapter_api::calls::{self, CallLog};
use adapter_api::{ErrorKind, User, VendorUser};
use serde::Serialize;
use serde_json::Value;

use crate::config::ReconcileMode;
use crate::gateway::{now, App, Gateway};
use crate::group_roles::role_from_groups;
use crate::outcome::Outcome;
use crate::roles::with_group_role;
use crate::store::{AuditEntry, Kind, Record};

/// What one pass may do.
#[derive(Clone, Debug)]
pub struct PassOptions {
    pub mode: ReconcileMode,
    /// Compare and report only; write nothing (not even the audit log).
    pub dry_run: bool,
    pub max_repairs: usize,
}

/// What kind of difference a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftKind {
    /// Disabled through Entra, active at the vendor: offboarding undone behind the gateway's back.
    Reenabled,
    /// Managed attributes (names, email, roles, userName) differ.
    Changed,
    /// Entra believes the user exists; the vendor no longer has it.
    Missing,
    /// Deprovisioned through the gateway (tombstone), active again at the vendor.
    LeaverActive,
    /// A vendor user the gateway never linked: reported, never touched.
    Unmanaged,
}

impl DriftKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DriftKind::Reenabled => "reenabled",
            DriftKind::Changed => "changed",
            DriftKind::Missing => "missing",
            DriftKind::LeaverActive => "leaver_active",
            DriftKind::Unmanaged => "unmanaged",
        }
    }
}

/// What became of a finding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    /// The vendor now holds Entra's values.
    Repaired,
    /// Recorded, not repaired (report mode, dry run, or the pass's repair budget was spent).
    Reported,
    /// The repair was tried and failed; the detail says why.
    Failed,
    /// Nothing to do any more (Entra changed the user meanwhile, or the vendor agrees again).
    Skipped,
    /// Left as it is by design (an unmanaged user; a user disabled in Entra and gone at the vendor).
    LeftAlone,
}

impl Resolution {
    /// Left for a person or the next pass.
    pub fn unrepaired(self) -> bool {
        matches!(self, Resolution::Reported | Resolution::Failed)
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub kind: DriftKind,
    pub user_name: String,
    /// The gateway's id, for users Entra knows.
    pub resource_id: Option<String>,
    pub vendor_id: String,
    /// The managed attributes that differ.
    pub attributes: Vec<String>,
    pub resolution: Resolution,
    pub detail: String,
}

/// One app's pass.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PassReport {
    pub app: String,
    pub vendor: String,
    /// Users the vendor listed.
    pub vendor_users: usize,
    /// Users the gateway manages for this app (the shadow store).
    pub managed: usize,
    pub findings: Vec<Finding>,
    /// What the pass could not check, and why (a vendor that cannot list, a listing that failed).
    pub unchecked: Vec<String>,
    pub vendor_calls: u32,
    pub seconds: f64,
}

impl PassReport {
    pub fn unrepaired(&self) -> usize {
        self.findings.iter().filter(|f| f.resolution.unrepaired()).count()
    }
    pub fn count(&self, resolution: Resolution) -> usize {
        self.findings.iter().filter(|f| f.resolution == resolution).count()
    }
    /// Everything was checked and nothing is left unrepaired.
    pub fn clean(&self) -> bool {
        self.unchecked.is_empty() && self.unrepaired() == 0
    }
}

/// Progress of a pass, for a progress bar.
#[derive(Clone, Copy, Debug)]
pub enum Progress {
    Listing,
    Listed { vendor_users: usize, to_check: usize },
    Checked,
}

/// A difference found by comparing, before anything is repaired.
enum Candidate {
    Linked { rec: Box<Record>, kind: DriftKind },
    Missing { rec: Box<Record> },
    Leaver { held: Box<VendorUser> },
    Unmanaged { held: Box<VendorUser> },
}

fn scim_of(user: &User) -> Value {
    user.to_scim()
}

impl Gateway {
    /// One reconcile pass over `app`. `periodic`: a pass of `serve`'s loop (unmanaged users are audited at
    /// their first sighting only).
    pub async fn reconcile(
        &self,
        app: &App,
        opts: &PassOptions,
        periodic: bool,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> PassReport {
        let started = Instant::now();
        let mut report =
            PassReport { app: app.name.clone(), vendor: app.adapter.vendor().to_string(), ..PassReport::default() };
        // Every vendor attempt of the pass goes into the app's latency histogram as it is made, as an Entra
        // request's do when it ends: a listing makes far more attempts than a call log keeps.
        let metrics = self.metrics.clone();
        let app_name = app.name.clone();
        let observer =
            calls::AttemptObserver::new(move |a| metrics.observe_vendor_attempts(&app_name, std::slice::from_ref(a)));
        let log_of_pass =
            || Arc::new(CallLog::background(&format!("reconcile-{}", app.name)).observed_by(observer.clone()));
        let listing_log = log_of_pass();
        let candidates = calls::scope(listing_log.clone(), self.compare(app, &mut report, progress)).await;
        report.vendor_calls = listing_log.calls();
        let mut repairs = 0usize;
        for candidate in candidates {
            let log = log_of_pass();
            let finding = calls::scope(log.clone(), self.resolve(app, opts, periodic, candidate, &mut repairs)).await;
            report.vendor_calls += log.calls();
            progress(Progress::Checked);
            if let Some(finding) = finding {
                self.metrics.drift_found(&app.name, finding.kind.as_str());
                report.findings.push(finding);
            }
        }
        report.seconds = started.elapsed().as_secs_f64();
        if !opts.dry_run {
            self.metrics.reconciled(
                &app.name,
                report.findings.len() as u64,
                report.count(Resolution::Repaired) as u64,
                report.unrepaired() as u64,
                report.unchecked.len() as u64,
            );
        }
        report
    }

    /// Lists the vendor and compares it with the shadow store: the differences, nothing repaired yet.
    async fn compare(
        &self,
        app: &App,
        report: &mut PassReport,
        progress: &(dyn Fn(Progress) + Send + Sync),
    ) -> Vec<Candidate> {
        let caps = app.adapter.capabilities();
        if !caps.list_users {
            report.unchecked.push(format!(
                "{} cannot list its users: nothing was compared (reads are answered from the gateway's store)",
                app.adapter.vendor()
            ));
            return Vec::new();
        }
        // The shadow first: a change Entra makes while the vendor is listed bumps the record's version,
        // and the repair then leaves that user alone.
        let snapshot = match self.store.list(&app.name, Kind::User).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(app = %app.name, error = %e, "reconcile: cannot read the shadow store");
                report.unchecked.push("the gateway's store could not be read".into());
                return Vec::new();
            }
        };
        // Members of mapped groups hold their group's role at the vendor (`group_roles`).
        let Ok(groups) = self.role_groups(app).await else {
            report.unchecked.push("the gateway's store could not be read".into());
            return Vec::new();
        };
        report.managed = snapshot.len();
        progress(Progress::Listing);
        let taken = Instant::now();
        let listed = match app.adapter.list_users().await {
            Ok(users) => users,
            Err(e) => {
                report.unchecked.push(format!("listing the vendor's users failed: {}", e.detail()));
                return Vec::new();
            }
        };
        self.vendor_index(&app.name).store(taken, &listed);
        report.vendor_users = listed.len();
        let mut by_vendor_id: HashMap<String, VendorUser> = HashMap::new();
        for vu in listed {
            if adapter_api::check_vendor_id(&vu.vendor_id).is_err() {
                report.unchecked.push(format!("a vendor user with an unusable id ({}) was skipped", vu.user.user_name));
                continue;
            }
            by_vendor_id.insert(vu.vendor_id.clone(), vu);
        }
        let mut candidates = Vec::new();
        for rec in snapshot {
            let Some(held) = by_vendor_id.remove(&rec.vendor_id) else {
                candidates.push(Candidate::Missing { rec: Box::new(rec) });
                continue;
            };
            let desired =
                User::from_scim(&rec.doc).map(|u| with_group_role(u, role_from_groups(app, &groups, &rec.id)));
            let Ok(desired) = desired else {
                report.unchecked.push(format!("user {} has a stored document the adapter cannot read", rec.id));
                continue;
            };
            let attributes = app.adapter.drift(&desired, &held.user);
            if attributes.is_empty() {
                continue;
            }
            let reenabled = !desired.active && held.user.active;
            let kind = if reenabled { DriftKind::Reenabled } else { DriftKind::Changed };
            candidates.push(Candidate::Linked { rec: Box::new(rec), kind });
        }
        for (vendor_id, held) in by_vendor_id {
            match self.store.tombstone(&app.name, Kind::User, &vendor_id).await {
                Ok(Some(_)) if held.user.active && !caps.hard_delete => {
                    candidates.push(Candidate::Leaver { held: Box::new(held) })
                }
                Ok(Some(_)) => {}
                Ok(None) => candidates.push(Candidate::Unmanaged { held: Box::new(held) }),
                Err(e) => {
                    tracing::error!(app = %app.name, error = %e, "reconcile: cannot read tombstones");
                    report.unchecked.push(format!("vendor user {} could not be checked", held.user.user_name));
                }
            }
        }
        progress(Progress::Listed { vendor_users: report.vendor_users, to_check: candidates.len() });
        candidates
    }

    /// Confirms one difference against the vendor as it is now, records it, and repairs it where the pass
    /// may. `None`: not a finding after all (Entra changed the user meanwhile, the vendor agrees again, an
    /// "unmanaged" user Entra linked meanwhile, or one an earlier periodic pass reported already).
    async fn resolve(
        &self,
        app: &App,
        opts: &PassOptions,
        periodic: bool,
        candidate: Candidate,
        repairs: &mut usize,
    ) -> Option<Finding> {
        match candidate {
            Candidate::Linked { rec, kind, .. } => self.reconcile_linked(app, opts, &rec, kind, repairs).await,
            Candidate::Missing { rec } => self.reconcile_linked(app, opts, &rec, DriftKind::Missing, repairs).await,
            Candidate::Leaver { held } => self.reconcile_leaver(app, opts, &held, repairs).await,
            Candidate::Unmanaged { held } => self.report_unmanaged(app, opts, periodic, &held).await,
        }
    }

    /// Why this pass may not repair one more finding, if it may not.
    fn repair_refused(opts: &PassOptions, repairs: usize) -> Option<&'static str> {
        if opts.dry_run {
            Some("dry run: nothing changed")
        } else if opts.mode == ReconcileMode::Report {
            Some("report mode: not repaired")
        } else if repairs >= opts.max_repairs {
            Some("this pass's repair budget (reconcile.max_repairs) is spent: left for the next pass")
        } else {
            None
        }
    }

    /// A linked user whose vendor record differed or was missing from the listing. Under the resource's
    /// lock, and only while the shadow record is the one compared (Entra's own change wins); the vendor's
    /// record is read again, so a stale or short listing never leads to a write.
    async fn reconcile_linked(
        &self,
        app: &App,
        opts: &PassOptions,
        snap: &Record,
        listed_kind: DriftKind,
        repairs: &mut usize,
    ) -> Option<Finding> {
        let mut finding = Finding {
            kind: listed_kind,
            user_name: snap.name().to_string(),
            resource_id: Some(snap.id.clone()),
            vendor_id: snap.vendor_id.clone(),
            attributes: Vec::new(),
            resolution: Resolution::Failed,
            detail: String::new(),
        };
        let _id_guard = match self.locks.id(&app.name, Kind::User, &snap.id).await {
            Ok(guard) => guard,
            Err(e) => {
                tracing::error!(app = %app.name, error = %e, "reconcile: the replicas' lock could not be taken");
                finding.detail = "the gateway's store could not be reached to lock the user".into();
                return Some(finding);
            }
        };
        let rec = match self.store.get(&app.name, Kind::User, &snap.id).await {
            Ok(Some(rec)) if rec.version == snap.version && rec.vendor_id == snap.vendor_id => rec,
            Ok(_) => return None,
            Err(e) => {
                tracing::error!(app = %app.name, error = %e, "reconcile: shadow store read failed");
                finding.detail = "the gateway's store could not be read".into();
                return Some(finding);
            }
        };
        let Ok(desired) = User::from_scim(&rec.doc) else {
            finding.detail = "the stored document cannot be read as a user".into();
            return Some(finding);
        };
        let Ok(desired) = self.vendor_user(app, &rec.id, desired).await else {
            finding.detail = "the gateway's store could not be read".into();
            return Some(finding);
        };
        let fresh = match app.adapter.get_user(&rec.vendor_id).await {
            Ok(fresh) => Some(fresh),
            Err(e) if matches!(e.kind(), ErrorKind::NotFound) => None,
            Err(e) => {
                finding.detail = format!("could not confirm it: reading the vendor's record failed: {}", e.detail());
                return Some(finding);
            }
        };
        let before = match &fresh {
            None => {
                finding.kind = DriftKind::Missing;
                finding.detail = "the vendor no longer has this user".into();
                None
            }
            Some(fresh) => {
                finding.attributes = app.adapter.drift(&desired, &fresh.user);
                if finding.attributes.is_empty() {
                    return None;
                }
                let reenabled = !desired.active && fresh.user.active;
                finding.kind = if reenabled { DriftKind::Reenabled } else { DriftKind::Changed };
                finding.detail = format!("the vendor's record differs on {}", finding.attributes.join(", "));
                Some(scim_of(&fresh.user))
            }
        };
        finding.resolution = Resolution::Reported;
        if fresh.is_none() && !desired.active {
            // Its access is off already, and some vendors cannot create a disabled user: not re-created.
            finding.resolution = Resolution::LeftAlone;
            finding
                .detail
                .push_str("; disabled in Entra, so access is off: not re-created (Entra's next enable re-creates it)");
        }
        if !opts.dry_run {
            self.audit_drift_found(app, &finding, before, Some(rec.doc.clone())).await;
        }
        if finding.resolution == Resolution::LeftAlone {
            return Some(finding);
        }
        if let Some(why_not) = Self::repair_refused(opts, *repairs) {
            finding.detail = format!("{}; {why_not}", finding.detail);
            return Some(finding);
        }
        *repairs += 1;
        let (resolution, detail) = match fresh {
            Some(fresh) => self.update_to_desired(app, &rec, &desired, fresh, &finding.attributes).await,
            None => self.recreate(app, rec, desired).await,
        };
        finding.resolution = resolution;
        finding.detail = format!("{}; {detail}", finding.detail);
        Some(finding)
    }

    /// A deprovisioned vendor account (tombstone) listed active: confirmed and disabled again, unless it was
    /// linked to an Entra user meanwhile (a create of the same person takes it back).
    async fn reconcile_leaver(
        &self,
        app: &App,
        opts: &PassOptions,
        listed: &VendorUser,
        repairs: &mut usize,
    ) -> Option<Finding> {
        let vendor_id = listed.vendor_id.as_str();
        let mut finding = Finding {
            kind: DriftKind::LeaverActive,
            user_name: listed.user.user_name.clone(),
            resource_id: None,
            vendor_id: vendor_id.to_string(),
            attributes: vec!["active".into()],
            resolution: Resolution::Failed,
            detail: String::new(),
        };
        let _claim = match self.locks.vendor_record(&app.name, Kind::User, vendor_id).await {
            Ok(guard) => guard,
            Err(e) => {
                tracing::error!(app = %app.name, error = %e, "reconcile: the replicas' lock could not be taken");
                finding.detail = "the gateway's store could not be reached to lock the vendor record".into();
                return Some(finding);
            }
        };
        let linked = self.store.find_by_vendor_id(&app.name, Kind::User, vendor_id).await;
        let tombstone = self.store.tombstone(&app.name, Kind::User, vendor_id).await;
        let deprovisioned = match (linked, tombstone) {
            (Ok(None), Ok(Some(t))) => t,
            (Ok(_), Ok(_)) => return None,
            _ => {
                finding.detail = "the gateway's store could not be read".into();
                return Some(finding);
            }
        };
        let fresh = match app.adapter.get_user(vendor_id).await {
            Ok(fresh) if fresh.user.active => fresh,
            Ok(_) => return None,
            Err(e) if matches!(e.kind(), ErrorKind::NotFound) => return None,
            Err(e) => {
                finding.detail = format!("could not confirm it: reading the vendor's record failed: {}", e.detail());
                return Some(finding);
            }
        };
        finding.resolution = Resolution::Reported;
        finding.detail =
            format!("deprovisioned through this gateway at {}, active again at the vendor", deprovisioned.deleted);
        if !opts.dry_run {
            self.audit_drift_found(app, &finding, Some(scim_of(&fresh.user)), None).await;
        }
        if let Some(why_not) = Self::repair_refused(opts, *repairs) {
            finding.detail = format!("{}; {why_not}", finding.detail);
            return Some(finding);
        }
        *repairs += 1;
        let mut audit = self.reconcile_audit(app, None, &fresh.user.user_name);
        audit.before = Some(scim_of(&fresh.user));
        if self.begin_change(app, &mut audit).await.is_err() {
            finding.resolution = Resolution::Failed;
            finding.detail.push_str("; the gateway's store cannot write: nothing was sent");
            return Some(finding);
        }
        let result = app.adapter.delete_user(vendor_id, &fresh.user).await.map(|()| "disabled again".to_string());
        self.audit_repair(audit, &result).await;
        let (resolution, detail) = match result {
            Ok(detail) => (Resolution::Repaired, detail),
            Err(e) => (Resolution::Failed, format!("disabling it failed: {}", e.detail())),
        };
        finding.resolution = resolution;
        finding.detail = format!("{}; {detail}", finding.detail);
        Some(finding)
    }

    /// A vendor user the gateway never linked: reported (audited once per process in periodic passes),
    /// never touched.
    async fn report_unmanaged(
        &self,
        app: &App,
        opts: &PassOptions,
        periodic: bool,
        held: &VendorUser,
    ) -> Option<Finding> {
        // Entra may have linked it while the vendor was listed.
        match self.store.find_by_vendor_id(&app.name, Kind::User, &held.vendor_id).await {
            Ok(None) => {}
            _ => return None,
        }
        if periodic && !self.unmanaged_seen.first_sighting(&app.name, &held.vendor_id) {
            return None;
        }
        let finding = Finding {
            kind: DriftKind::Unmanaged,
            user_name: held.user.user_name.clone(),
            resource_id: None,
            vendor_id: held.vendor_id.clone(),
            attributes: Vec::new(),
            resolution: Resolution::LeftAlone,
            detail: "not provisioned through this gateway: left untouched".into(),
        };
        if !opts.dry_run {
            self.audit_drift_found(app, &finding, Some(scim_of(&held.user)), None).await;
        }
        Some(finding)
    }

    fn reconcile_audit(&self, app: &App, resource_id: Option<String>, name: &str) -> AuditEntry {
        AuditEntry {
            at: now(),
            app: app.name.clone(),
            resource_type: Kind::User.as_str().into(),
            resource_id,
            name: Some(name.to_string()),
            operation: "reconcile".into(),
            actor: "gateway".into(),
            request_id: calls::current().and_then(|l| l.request_id().map(String::from)),
            ..AuditEntry::default()
        }
    }

    async fn audit_drift_found(&self, app: &App, finding: &Finding, before: Option<Value>, after: Option<Value>) {
        let mut entry = self.reconcile_audit(app, finding.resource_id.clone(), &finding.user_name);
        entry.outcome = Outcome::DriftFound;
        entry.before = before;
        entry.after = after;
        entry.detail = Some(format!("{}: {} (vendor id {})", finding.kind.as_str(), finding.detail, finding.vendor_id));
        if let Err(e) = self.store.audit(&entry).await {
            tracing::error!(app = %app.name, error = %e, "cannot write audit entry");
        }
    }

    /// Completes a repair's audit entry (begun with `begin_change`): `drift_repaired`, or the error's kind.
    async fn audit_repair(&self, mut entry: AuditEntry, result: &Result<String, adapter_api::Error>) {
        crate::gateway::stamp(&mut entry);
        match result {
            Ok(detail) => {
                entry.outcome = Outcome::DriftRepaired;
                entry.detail = Some(detail.clone());
            }
            Err(e) => {
                entry.outcome = Outcome::from(e);
                entry.detail = Some(format!("repair failed: {}", e.detail()));
            }
        }
        if let Err(e) = self.store.audit(&entry).await {
            tracing::error!(error = %e, "cannot write audit entry");
        }
    }

    /// Pushes Entra's values of the differing managed attributes to the vendor (the caller holds the lock).
    async fn update_to_desired(
        &self,
        app: &App,
        rec: &Record,
        desired: &User,
        fresh: VendorUser,
        attributes: &[String],
    ) -> (Resolution, String) {
        let mut audit = self.reconcile_audit(app, Some(rec.id.clone()), rec.name());
        audit.before = Some(scim_of(&fresh.user));
        audit.after = Some(rec.doc.clone());
        if self.begin_change(app, &mut audit).await.is_err() {
            return (Resolution::Failed, "the gateway's store cannot write: nothing was sent".into());
        }
        let result = app
            .adapter
            .update_user(&rec.vendor_id, &fresh.user, desired)
            .await
            .map(|()| format!("set {} back to Entra's values", attributes.join(", ")));
        self.audit_repair(audit, &result).await;
        match result {
            Ok(detail) => (Resolution::Repaired, detail),
            Err(e) => (Resolution::Failed, format!("repair failed: {}", e.detail())),
        }
    }

    /// Re-creates an active user the vendor no longer has (it said 404), through the create path that
    /// adopts the vendor's record of the same userName instead of duplicating it, and links the shadow
    /// record to it (the caller holds the id lock; the name lock is taken here, ids before names).
    async fn recreate(&self, app: &App, rec: Record, desired: User) -> (Resolution, String) {
        let _name_guard = match self.locks.name(&app.name, Kind::User, rec.name()).await {
            Ok(guard) => guard,
            Err(e) => {
                tracing::error!(app = %app.name, error = %e, "reconcile: the replicas' lock could not be taken");
                return (Resolution::Failed, "the gateway's store could not be reached to lock the userName".into());
            }
        };
        let mut audit = self.reconcile_audit(app, Some(rec.id.clone()), rec.name());
        audit.after = Some(rec.doc.clone());
        // The user is gone at the vendor; an account holding the same userName now was made by someone
        // else (the create path would adopt it). Taking it over is a person's decision, never a repair's.
        if app.adapter.capabilities().find_by_user_name {
            match app.adapter.find_user(rec.name()).await {
                Ok(Some(other)) if other.vendor_id != rec.vendor_id => {
                    let detail = format!(
                        "the vendor now holds another account ({}) with this userName, made outside the \
                         gateway; it was not taken over: link or remove it at the vendor",
                        other.vendor_id
                    );
                    let refusal = adapter_api::Error::needs_manual_action(detail.clone());
                    self.audit_repair(audit, &Err(refusal)).await;
                    return (Resolution::Failed, detail);
                }
                Ok(_) => {}
                Err(e) => {
                    let detail = format!("looking for the userName at the vendor failed: {}", e.detail());
                    self.audit_repair(audit, &Err(e)).await;
                    return (Resolution::Failed, detail);
                }
            }
        }
        if self.begin_change(app, &mut audit).await.is_err() {
            return (Resolution::Failed, "the gateway's store cannot write: nothing was sent".into());
        }
        let created = self
            .create_user_at_vendor(app, &desired, &mut audit)
            .await
            .and_then(|(id, claim)| adapter_api::check_vendor_id(&id).map(|()| (id, claim)));
        let (vendor_id, _claim) = match created {
            Ok(linked) => linked,
            Err(e) => {
                let detail = format!("re-creating it failed: {}", e.detail());
                self.audit_repair(audit, &Err(e)).await;
                return (Resolution::Failed, detail);
            }
        };
        let detail = format!("re-created at the vendor as {vendor_id} (was {})", rec.vendor_id);
        // A new version of the record (the store's compare-and-set takes version n + 1 over n only).
        let version = rec.version + 1;
        let mut doc = rec.doc.clone();
        if let Some(meta) = doc.get_mut("meta").and_then(Value::as_object_mut) {
            meta.insert("version".into(), Value::String(format!("W/\"{version}\"")));
        }
        let relinked = Record { vendor_id, doc, version, ..rec };
        crate::gateway::stamp(&mut audit);
        audit.outcome = Outcome::DriftRepaired;
        audit.operation = "reconcile".into();
        audit.detail = Some(detail.clone());
        match self.store.put(&relinked, &audit).await {
            Ok(()) => (Resolution::Repaired, detail),
            Err(e) => {
                tracing::error!(app = %app.name, error = %e, "reconcile: linking the re-created user failed");
                (Resolution::Failed, format!("{detail}, but the gateway could not record the new link"))
            }
        }
    }
}

/// Runs every app's periodic pass inside `serve`: the first one interval after start, then every interval.
pub fn spawn_periodic(gateway: Arc<Gateway>) {
    for app in gateway.apps.values() {
        let interval = app.reconcile.interval();
        if interval.is_zero() || !app.adapter.capabilities().list_users {
            continue;
        }
        let (gateway, app) = (gateway.clone(), app.clone());
        let opts = PassOptions { mode: app.reconcile.mode, dry_run: false, max_repairs: app.reconcile.max_repairs };
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                // With replicas, one pass per interval on one of them: the others find the lease taken.
                let lease = match gateway.store.lease(&format!("reconcile:{}", app.name), interval).await {
                    Ok(Some(lease)) => lease,
                    Ok(None) => {
                        tracing::debug!(app = %app.name, "reconcile: another replica runs this pass");
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(app = %app.name, error = %e, "reconcile: the lease could not be asked for");
                        continue;
                    }
                };
                let report = gateway.reconcile(&app, &opts, true, &|_| {}).await;
                drop(lease);
                log_pass(&report);
            }
        });
    }
}

/// One log line per pass (and one per unrepaired finding: someone must look).
pub fn log_pass(report: &PassReport) {
    for f in report.findings.iter().filter(|f| f.resolution.unrepaired()) {
        tracing::warn!(app = %report.app, user = %f.user_name, kind = f.kind.as_str(), detail = %f.detail, "drift left unrepaired");
    }
    for what in &report.unchecked {
        tracing::warn!(app = %report.app, "reconcile could not check: {what}");
    }
    tracing::info!(
        app = %report.app,
        vendor_users = report.vendor_users,
        managed = report.managed,
        found = report.findings.len(),
        repaired = report.count(Resolution::Repaired),
        unrepaired = report.unrepaired(),
        vendor_calls = report.vendor_calls,
        seconds = report.seconds,
        "reconcile pass"
    );
}

/// The summary table `scim-bridge reconcile` prints.
pub fn render_summary(reports: &[PassReport]) -> String {
    let mut out = format!(
        "{:<16} {:<9} {:>8} {:>8} {:>6} {:>9} {:>11} {:>9} {:>8}\n",
        "APP", "VENDOR", "VENDOR#", "MANAGED", "FOUND", "REPAIRED", "UNREPAIRED", "UNMANAGED", "CALLS"
    );
    for r in reports {
        out.push_str(&format!(
            "{:<16} {:<9} {:>8} {:>8} {:>6} {:>9} {:>11} {:>9} {:>8}\n",
            r.app,
            r.vendor,
            r.vendor_users,
            r.managed,
            r.findings.len(),
            r.count(Resolution::Repaired),
            r.unrepaired(),
            r.findings.iter().filter(|f| f.kind == DriftKind::Unmanaged).count(),
            r.vendor_calls,
        ));
    }
    for r in reports {
        for f in &r.findings {
            out.push_str(&format!(
                "  {}: {} {} [{}] {:?}: {}\n",
                r.app,
                f.kind.as_str(),
                crate::audit_report::printable(&f.user_name),
                f.attributes.join(","),
                f.resolution,
                crate::audit_report::printable(&f.detail)
            ));
        }
        for what in &r.unchecked {
            out.push_str(&format!("  {}: NOT CHECKED: {}\n", r.app, crate::audit_report::printable(what)));
        }
    }
    out
}
