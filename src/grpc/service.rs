//! `peace.v1.ClauseTracker`: each handler converts its request at the edge,
//! calls the store (reads) or the committer (writes), and converts back.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use tracing::{debug, instrument};

use super::auth::{Access, Auth};
use super::convert::{self, WriteRequest};
use super::mask::RevisionMask;
use super::page;
use super::watch::{self, WatchLimits};
use crate::domain::{analysis, limits, Clause, ClauseStatus, Consensus, Plan, Position, Revision};
use crate::error::{Error, Result};
use crate::hub::Hub;
use crate::pb;
use crate::store::{CommitterHandle, RevisionFilter, Store};

/// Everything the handlers share.
#[derive(Clone)]
pub struct Tracker {
    store: Store,
    committer: CommitterHandle,
    hub: Hub,
    auth: Arc<Auth>,
    watch_limits: WatchLimits,
}

impl Tracker {
    /// A service over an open store, its committer and hub.
    pub fn new(
        store: Store,
        committer: CommitterHandle,
        hub: Hub,
        auth: Arc<Auth>,
        watch_limits: WatchLimits,
    ) -> Tracker {
        Tracker {
            store,
            committer,
            hub,
            auth,
            watch_limits,
        }
    }

    /// The revision a read refers to: `at_revision`, `at_time`, or the head.
    fn read_revision(
        &self,
        at_revision: u64,
        at_time: Option<&prost_types::Timestamp>,
    ) -> Result<u64> {
        let head = self.store.head()?;
        match (at_revision, at_time) {
            (0, None) => Ok(head),
            (r, None) if r > head => Err(Error::NotFound(format!(
                "revision {r} (the latest revision is {head})"
            ))),
            (r, None) => Ok(r),
            (0, Some(t)) => {
                let time = convert::timestamp_from("at_time", t)?;
                self.store.revision_at_time(time)
            }
            (_, Some(_)) => Err(Error::invalid(
                "at_time",
                "set at_revision or at_time, not both",
            )),
        }
    }

    fn plan_or_not_found(&self, plan_id: &str) -> Result<Plan> {
        self.store
            .plan(plan_id)?
            .ok_or_else(|| Error::NotFound(format!("plan {plan_id}")))
    }

    fn plan_at(&self, plan_id: &str, revision: u64) -> Result<Plan> {
        self.store
            .plan_at(plan_id, revision)?
            .ok_or_else(|| Error::NotFound(format!("plan {plan_id} at revision {revision}")))
    }

    async fn write<T>(
        &self,
        request: Request<T>,
        what: &'static str,
    ) -> Result<pb::Revision, Status>
    where
        T: prost::Message,
        WriteRequest: TryFrom<T, Error = Error>,
    {
        let access = self.write_guard(&request)?;
        let req = WriteRequest::try_from(request.into_inner())?;
        access.may_write(&req.write.command)?;
        let revs = self
            .committer
            .commit(req.write, access.author(), &req.request_id)
            .await?;
        let first = revs
            .first()
            .ok_or_else(|| Error::Storage(format!("{what} committed no revision")))?;
        debug!(revision = first.revision, what, "write committed");
        Ok(self.render_revision(first, req.read_mask)?)
    }

    /// A committed revision as a write returns it: the plan (for the stance
    /// order of the snapshots) is read only if the mask selects a snapshot.
    fn render_revision(&self, rev: &Revision, mask: RevisionMask) -> Result<pb::Revision> {
        let plan = match (&rev.plan, mask.needs_plan()) {
            (_, false) => None,
            (Some(plan), true) => Some(plan.clone()),
            (None, true) => Some(self.plan_or_not_found(&rev.plan_id)?),
        };
        convert::revision_masked(rev, plan.as_ref(), mask)
    }

    /// Size limit and authentication for a read (or Watch).
    fn read_guard<T: prost::Message>(&self, request: &Request<T>) -> Result<Access> {
        // One line per request at debug, inside the handler's span (method and ids).
        debug!(bytes = request.get_ref().encoded_len(), "read request");
        within_size_limit(request)?;
        self.auth.access_for_read(request.metadata())
    }

    /// Size limit and authentication for a write.
    fn write_guard<T: prost::Message>(&self, request: &Request<T>) -> Result<Access> {
        debug!(bytes = request.get_ref().encoded_len(), "write request");
        within_size_limit(request)?;
        self.auth.access_for_write(request.metadata())
    }
}

/// Requests over [`limits::MAX_REQUEST_BYTES`] are refused before anything else.
/// (The transport's own decode cap is higher and answers OUT_OF_RANGE; this
/// gives the documented RESOURCE_EXHAUSTED.)
fn within_size_limit<T: prost::Message>(request: &Request<T>) -> Result<()> {
    let size = request.get_ref().encoded_len();
    if size > limits::MAX_REQUEST_BYTES {
        return Err(Error::ResourceExhausted(format!(
            "request is {size} bytes; the limit is {} bytes",
            limits::MAX_REQUEST_BYTES
        )));
    }
    Ok(())
}

/// The filters of a ListClauses request, validated.
#[derive(Hash)]
struct ClauseFilter {
    plan_id: String,
    statuses: Vec<ClauseStatus>,
    consensus: Vec<Consensus>,
    topic: String,
    party: Option<(String, Position)>,
}

impl ClauseFilter {
    fn from_request(req: &pb::ListClausesRequest) -> Result<ClauseFilter> {
        limits::id("plan_id", &req.plan_id)?;
        let statuses = req
            .statuses
            .iter()
            .enumerate()
            .map(|(i, s)| convert::status_from(&format!("statuses[{i}]"), *s))
            .collect::<Result<Vec<_>>>()?;
        let consensus = req
            .consensus
            .iter()
            .enumerate()
            .map(|(i, c)| convert::consensus_from(&format!("consensus[{i}]"), *c))
            .collect::<Result<Vec<_>>>()?;
        limits::optional_id("topic", &req.topic)?;
        let party = match (req.party_id.is_empty(), req.position) {
            (true, 0) => None,
            (false, 0) => return Err(Error::invalid("position", "is required with party_id")),
            (true, _) => return Err(Error::invalid("party_id", "is required with position")),
            (false, p) => {
                limits::id("party_id", &req.party_id)?;
                Some((req.party_id.clone(), convert::position_from("position", p)?))
            }
        };
        Ok(ClauseFilter {
            plan_id: req.plan_id.clone(),
            statuses,
            consensus,
            topic: req.topic.clone(),
            party,
        })
    }

    fn matches(&self, clause: &Clause, plan: &Plan) -> bool {
        (self.statuses.is_empty() || self.statuses.contains(&clause.status))
            && (self.consensus.is_empty() || self.consensus.contains(&clause.consensus(plan)))
            && (self.topic.is_empty() || clause.topics.contains(&self.topic))
            && self
                .party
                .as_ref()
                .is_none_or(|(party, position)| clause.position_of(party) == *position)
    }
}

type WatchStream =
    std::pin::Pin<Box<dyn futures_core::Stream<Item = Result<pb::WatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl pb::clause_tracker_server::ClauseTracker for Tracker {
    #[instrument(skip_all, fields(plan = %request.get_ref().plan_id))]
    async fn create_plan(
        &self,
        request: Request<pb::CreatePlanRequest>,
    ) -> Result<Response<pb::Revision>, Status> {
        self.write(request, "CreatePlan").await.map(Response::new)
    }

    #[instrument(skip_all, fields(plan = %request.get_ref().plan_id))]
    async fn get_plan(
        &self,
        request: Request<pb::GetPlanRequest>,
    ) -> Result<Response<pb::Plan>, Status> {
        self.read_guard(&request)?;
        let req = request.into_inner();
        limits::id("plan_id", &req.plan_id)?;
        Ok(Response::new(convert::plan_to(
            &self.plan_or_not_found(&req.plan_id)?,
        )))
    }

    #[instrument(skip_all)]
    async fn list_plans(
        &self,
        request: Request<pb::ListPlansRequest>,
    ) -> Result<Response<pb::ListPlansResponse>, Status> {
        self.read_guard(&request)?;
        let req = request.into_inner();
        let size = page::page_size(req.page_size)?;
        let after: Option<String> = page::decode(&req.page_token, 0)?;
        let mut plans = self.store.plans(after.as_deref(), size + 1)?;
        let next_page_token = if plans.len() > size {
            plans.truncate(size);
            page::encode(0, &plans.last().map(|p| p.id.clone()).unwrap_or_default())
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListPlansResponse {
            plans: plans.iter().map(convert::plan_to).collect(),
            next_page_token,
        }))
    }

    #[instrument(skip_all, fields(plan = %request.get_ref().plan_id))]
    async fn add_party(
        &self,
        request: Request<pb::AddPartyRequest>,
    ) -> Result<Response<pb::Revision>, Status> {
        self.write(request, "AddParty").await.map(Response::new)
    }

    #[instrument(skip_all, fields(plan = %request.get_ref().plan_id, clause = %request.get_ref().clause_id))]
    async fn create_clause(
        &self,
        request: Request<pb::CreateClauseRequest>,
    ) -> Result<Response<pb::Revision>, Status> {
        self.write(request, "CreateClause").await.map(Response::new)
    }

    #[instrument(skip_all, fields(plan = %request.get_ref().plan_id, clause = %request.get_ref().clause_id))]
    async fn get_clause(
        &self,
        request: Request<pb::GetClauseRequest>,
    ) -> Result<Response<pb::Clause>, Status> {
        self.read_guard(&request)?;
        let req = request.into_inner();
        limits::id("plan_id", &req.plan_id)?;
        limits::id("clause_id", &req.clause_id)?;
        let not_found = || Error::NotFound(format!("clause {}/{}", req.plan_id, req.clause_id));
        let plan = self.plan_or_not_found(&req.plan_id)?;
        // Stances are rendered for the plan's parties as of the read revision.
        let (clause, read_at) = if req.version != 0 {
            if req.at_revision != 0 || req.at_time.is_some() {
                return Err(Error::invalid(
                    "version",
                    "set version or at_revision/at_time, not both",
                )
                .into());
            }
            let latest = self
                .store
                .clause(&req.plan_id, &req.clause_id)?
                .ok_or_else(not_found)?;
            let clause = self
                .store
                .clause_version(&req.plan_id, &req.clause_id, req.version)?
                .ok_or_else(|| {
                    Error::NotFound(format!(
                        "version {} of clause {}/{} (the latest is {})",
                        req.version, req.plan_id, req.clause_id, latest.version
                    ))
                })?;
            (clause, u64::MAX)
        } else {
            let at = self.read_revision(req.at_revision, req.at_time.as_ref())?;
            let clause = self
                .store
                .clause_at(&req.plan_id, &req.clause_id, at)?
                .ok_or_else(|| {
                    Error::NotFound(format!(
                        "clause {}/{} at revision {at}",
                        req.plan_id, req.clause_id
                    ))
                })?;
            (clause, at)
        };
        Ok(Response::new(convert::clause_to(
            &clause,
            &plan.at_revision(read_at),
        )))
    }

    #[instrument(skip_all, fields(plan = %request.get_ref().plan_id))]
    async fn list_clauses(
        &self,
        request: Request<pb::ListClausesRequest>,
    ) -> Result<Response<pb::ListClausesResponse>, Status> {
        self.read_guard(&request)?;
        let req = request.into_inner();
        let filter = ClauseFilter::from_request(&req)?;
        let size = page::page_size(req.page_size)?;
        let hash = page::filters_hash(&(
            &filter,
            req.at_revision,
            req.at_time.map(|t| (t.seconds, t.nanos)),
        ));
        // A listing reads one revision throughout: the token pins it.
        let cursor: Option<(u64, u32, String)> = page::decode(&req.page_token, hash)?;
        let at = match &cursor {
            Some((rev, _, _)) => *rev,
            None => self.read_revision(req.at_revision, req.at_time.as_ref())?,
        };
        let plan = self.plan_at(&req.plan_id, at)?;
        if let Some((party, _)) = &filter.party {
            if plan.party(party).is_none() {
                return Err(Error::NotFound(format!("party {party} on plan {}", plan.id)).into());
            }
        }
        let mut clauses = self.store.clauses_at(&req.plan_id, at)?;
        clauses.sort_by(|a, b| (a.number, &a.id).cmp(&(b.number, &b.id)));
        let start = match &cursor {
            Some((_, number, id)) => {
                clauses.partition_point(|c| (c.number, &c.id) <= (*number, id))
            }
            None => 0,
        };
        let mut page: Vec<&Clause> = clauses[start..]
            .iter()
            .filter(|c| filter.matches(c, &plan))
            .take(size + 1)
            .collect();
        let next_page_token = if page.len() > size {
            page.truncate(size);
            let last = page[size - 1];
            page::encode(hash, &(at, last.number, last.id.clone()))
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListClausesResponse {
            clauses: page.iter().map(|c| convert::clause_to(c, &plan)).collect(),
            next_page_token,
            revision: at,
        }))
    }

    #[instrument(skip_all, fields(plan = %request.get_ref().plan_id, clause = %request.get_ref().clause_id))]
    async fn amend_clause(
        &self,
        request: Request<pb::AmendClauseRequest>,
    ) -> Result<Response<pb::Revision>, Status> {
        self.write(request, "AmendClause").await.map(Response::new)
    }

    #[instrument(skip_all, fields(plan = %request.get_ref().plan_id, clause = %request.get_ref().clause_id, party = %request.get_ref().party_id))]
    async fn set_stance(
        &self,
        request: Request<pb::SetStanceRequest>,
    ) -> Result<Response<pb::Revision>, Status> {
        self.write(request, "SetStance").await.map(Response::new)
    }

    #[instrument(skip_all, fields(plan = %request.get_ref().plan_id, clause = %request.get_ref().clause_id))]
    async fn set_clause_status(
        &self,
        request: Request<pb::SetClauseStatusRequest>,
    ) -> Result<Response<pb::Revision>, Status> {
        self.write(request, "SetClauseStatus")
            .await
            .map(Response::new)
    }

    #[instrument(skip_all, fields(plan = %request.get_ref().plan_id))]
    async fn list_revisions(
        &self,
        request: Request<pb::ListRevisionsRequest>,
    ) -> Result<Response<pb::ListRevisionsResponse>, Status> {
        self.read_guard(&request)?;
        let req = request.into_inner();
        limits::optional_id("plan_id", &req.plan_id)?;
        limits::optional_id("clause_id", &req.clause_id)?;
        limits::optional_id("party_id", &req.party_id)?;
        if req.plan_id.is_empty() && !(req.clause_id.is_empty() && req.party_id.is_empty()) {
            return Err(Error::invalid("plan_id", "is required with clause_id or party_id").into());
        }
        let read_mask = RevisionMask::from_request("read_mask", req.read_mask.as_ref())?;
        let filter = RevisionFilter {
            plan_id: Some(req.plan_id.clone()).filter(|s| !s.is_empty()),
            clause_id: Some(req.clause_id.clone()).filter(|s| !s.is_empty()),
            party_id: Some(req.party_id.clone()).filter(|s| !s.is_empty()),
        };
        if let Some(plan_id) = &filter.plan_id {
            self.plan_or_not_found(plan_id)?;
        }
        let size = page::page_size(req.page_size)?;
        let hash = page::filters_hash(&(&filter, req.start_revision, req.end_revision));
        let head = self.store.head()?;
        let end = if req.end_revision == 0 {
            head
        } else {
            req.end_revision.min(head)
        };
        if req.end_revision != 0 && req.start_revision > req.end_revision {
            return Err(Error::invalid("end_revision", "is before start_revision").into());
        }
        let from: u64 = page::decode(&req.page_token, hash)?.unwrap_or(req.start_revision);
        let mut numbers = self.store.revision_numbers(&filter, from, end, size + 1)?;
        let next_page_token = if numbers.len() > size {
            numbers.truncate(size);
            page::encode(hash, &(numbers[size - 1] + 1))
        } else {
            String::new()
        };
        let mut plans: std::collections::HashMap<String, Plan> = std::collections::HashMap::new();
        let mut revisions = Vec::with_capacity(numbers.len());
        for n in numbers {
            let rev = self
                .store
                .revision(n)?
                .ok_or_else(|| Error::Storage(format!("revision {n} indexed but missing")))?;
            let plan = if read_mask.needs_plan() {
                if !plans.contains_key(&rev.plan_id) {
                    plans.insert(rev.plan_id.clone(), self.plan_or_not_found(&rev.plan_id)?);
                }
                plans.get(&rev.plan_id)
            } else {
                None
            };
            revisions.push(convert::revision_masked(&rev, plan, read_mask)?);
        }
        Ok(Response::new(pb::ListRevisionsResponse {
            revisions,
            next_page_token,
        }))
    }

    #[instrument(skip_all, fields(plan = %request.get_ref().plan_id, clause = %request.get_ref().clause_id))]
    async fn diff_clause(
        &self,
        request: Request<pb::DiffClauseRequest>,
    ) -> Result<Response<pb::ClauseDiff>, Status> {
        self.read_guard(&request)?;
        let req = request.into_inner();
        limits::id("plan_id", &req.plan_id)?;
        limits::id("clause_id", &req.clause_id)?;
        let plan = self.plan_or_not_found(&req.plan_id)?;
        let latest = self
            .store
            .clause(&req.plan_id, &req.clause_id)?
            .ok_or_else(|| Error::NotFound(format!("clause {}/{}", req.plan_id, req.clause_id)))?;
        let from_version = if req.from_version == 0 {
            1
        } else {
            req.from_version
        };
        let to_version = if req.to_version == 0 {
            latest.version
        } else {
            req.to_version
        };
        let version = |v: u64, field: &str| -> Result<Clause> {
            if v > latest.version {
                return Err(Error::NotFound(format!(
                    "{field} {v} of clause {}/{} (the latest is {})",
                    req.plan_id, req.clause_id, latest.version
                )));
            }
            self.store
                .clause_version(&req.plan_id, &req.clause_id, v)?
                .ok_or_else(|| {
                    Error::NotFound(format!(
                        "version {v} of clause {}/{}",
                        req.plan_id, req.clause_id
                    ))
                })
        };
        let from = version(from_version, "from_version")?;
        let to = version(to_version, "to_version")?;
        let diff = analysis::diff(&from, &to, &plan);
        Ok(Response::new(pb::ClauseDiff {
            from: Some(convert::clause_to(&from, &plan)),
            to: Some(convert::clause_to(&to, &plan)),
            text: diff.text.into_iter().map(convert::edit_to).collect(),
            title_changed: diff.title_changed,
            stances: diff
                .stances
                .into_iter()
                .map(|c| pb::StanceChange {
                    party_id: c.party_id,
                    from: convert::position_to(c.from) as i32,
                    to: convert::position_to(c.to) as i32,
                })
                .collect(),
            title: diff.title.into_iter().map(convert::edit_to).collect(),
        }))
    }

    #[instrument(skip_all, fields(plan = %request.get_ref().plan_id))]
    async fn get_summary(
        &self,
        request: Request<pb::GetSummaryRequest>,
    ) -> Result<Response<pb::PlanSummary>, Status> {
        self.read_guard(&request)?;
        let req = request.into_inner();
        limits::id("plan_id", &req.plan_id)?;
        self.plan_or_not_found(&req.plan_id)?;
        let at = self.read_revision(req.at_revision, req.at_time.as_ref())?;
        let plan = self.plan_at(&req.plan_id, at)?;
        let clauses = self.store.clauses_at(&req.plan_id, at)?;
        let summary = analysis::summarize(&plan, &clauses);
        Ok(Response::new(convert::summary_to(&plan.id, at, summary)))
    }

    #[instrument(skip_all, fields(base = %request.get_ref().base_plan_id, plan = %request.get_ref().plan_id))]
    async fn compare_plans(
        &self,
        request: Request<pb::ComparePlansRequest>,
    ) -> Result<Response<pb::ComparePlansResponse>, Status> {
        self.read_guard(&request)?;
        let req = request.into_inner();
        limits::id("base_plan_id", &req.base_plan_id)?;
        limits::id("plan_id", &req.plan_id)?;
        self.plan_or_not_found(&req.base_plan_id)?;
        self.plan_or_not_found(&req.plan_id)?;
        let head = self.store.head()?;
        let base = self.store.clauses_at(&req.base_plan_id, head)?;
        let derived = self.store.clauses_at(&req.plan_id, head)?;
        let rows = analysis::compare(&req.base_plan_id, &base, &derived);
        Ok(Response::new(pb::ComparePlansResponse {
            rows: rows.into_iter().map(convert::lineage_to).collect(),
        }))
    }

    #[instrument(skip_all, fields(plan = %request.get_ref().plan_id, changes = request.get_ref().changes.len()))]
    async fn apply(
        &self,
        request: Request<pb::ApplyRequest>,
    ) -> Result<Response<pb::ApplyResponse>, Status> {
        let access = self.write_guard(&request)?;
        let batch = convert::apply_from(request.into_inner())?;
        access.may_apply(&batch.writes)?;
        let revs = self
            .committer
            .commit_batch(batch.writes, access.author(), &batch.request_id)
            .await?;
        let revisions = revs
            .iter()
            .map(|r| self.render_revision(r, batch.read_mask))
            .collect::<Result<Vec<_>>>()?;
        Ok(Response::new(pb::ApplyResponse { revisions }))
    }

    type WatchStream = WatchStream;

    #[instrument(skip_all, fields(plan = %request.get_ref().plan_id, start = request.get_ref().start_revision))]
    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.read_guard(&request)?;
        let req = request.into_inner();
        let spec = watch::WatchSpec::from_request(&req, &self.watch_limits)?;
        let stream = watch::start(
            spec,
            self.store.clone(),
            self.hub.clone(),
            &self.watch_limits,
        )?;
        Ok(Response::new(Box::pin(stream)))
    }
}
