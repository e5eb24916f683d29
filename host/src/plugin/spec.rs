//! What a pipeline's chain is made of, checked: its declared routes (numbered by
//! [`RouteId`]), its default route and its stages ([`StageSpec`]), assembled by
//! [`ChainSpec::new`] or refused with a [`SpecError`]. Running a chain is `chain`'s job.

use super::limits::StageLimits;
use super::module::PluginModule;
use std::collections::HashMap;
use std::sync::Arc;

/// Index of a route in [`ChainSpec::routes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteId(pub u16);

/// One stage as configured.
#[derive(Clone, Debug)]
pub struct StageSpec {
    /// Stage name, unique in its pipeline; used in logs, metrics and dead-letter headers.
    pub name: String,
    /// The compiled plugin.
    pub module: Arc<PluginModule>,
    /// The config map handed to `init`.
    pub config: Vec<(String, String)>,
    /// Resource limits.
    pub limits: StageLimits,
}

/// A pipeline's chain: its declared routes, default route and stages.
#[derive(Clone, Debug)]
pub struct ChainSpec {
    pub(super) pipeline: String,
    pub(super) routes: Vec<String>,
    pub(super) route_ids: HashMap<String, RouteId>,
    pub(super) default_route: RouteId,
    pub(super) stages: Vec<StageSpec>,
    /// Event-time settings (used by stateful stages).
    pub(super) time: super::time::EventTime,
    /// A stateful stage whose state this version starts empty (a reload with
    /// `reset_state`).
    pub(super) reset: Option<String>,
}

/// Why a chain cannot be assembled. Each names the pipeline and the offending route, stage
/// or limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// More routes than a [`RouteId`] can number.
    #[error("pipeline {pipeline}: too many routes ({count}; at most 65535)")]
    TooManyRoutes {
        /// The pipeline.
        pipeline: String,
        /// How many were declared.
        count: usize,
    },
    /// A route name appears twice.
    #[error("pipeline {pipeline}: route `{route}` is declared twice")]
    DuplicateRoute {
        /// The pipeline.
        pipeline: String,
        /// The route.
        route: String,
    },
    /// The default route is not among the routes.
    #[error("pipeline {pipeline}: default route `{route}` is not declared (declared: {declared})")]
    UnknownDefaultRoute {
        /// The pipeline.
        pipeline: String,
        /// The default route asked for.
        route: String,
        /// The declared routes, comma-separated.
        declared: String,
    },
    /// A stage name appears twice.
    #[error("pipeline {pipeline}: stage `{stage}` appears twice")]
    DuplicateStage {
        /// The pipeline.
        pipeline: String,
        /// The stage.
        stage: String,
    },
    /// A stage's limits make no sense.
    #[error("pipeline {pipeline}, stage {stage}: {problem}")]
    BadLimits {
        /// The pipeline.
        pipeline: String,
        /// The stage.
        stage: String,
        /// What is wrong, naming the key.
        problem: String,
    },
}

impl ChainSpec {
    /// Checks and assembles a chain.
    pub fn new(
        pipeline: impl Into<String>,
        routes: Vec<String>,
        default_route: &str,
        mut stages: Vec<StageSpec>,
    ) -> Result<Self, SpecError> {
        let pipeline = pipeline.into();
        let mut route_ids = HashMap::new();
        for (i, name) in routes.iter().enumerate() {
            let Ok(id) = u16::try_from(i) else {
                return Err(SpecError::TooManyRoutes {
                    pipeline,
                    count: routes.len(),
                });
            };
            if route_ids.insert(name.clone(), RouteId(id)).is_some() {
                return Err(SpecError::DuplicateRoute {
                    pipeline,
                    route: name.clone(),
                });
            }
        }
        let Some(&default_route) = route_ids.get(default_route) else {
            return Err(SpecError::UnknownDefaultRoute {
                pipeline,
                route: default_route.to_owned(),
                declared: routes.join(", "),
            });
        };
        let mut seen = std::collections::HashSet::new();
        for stage in &mut stages {
            if !seen.insert(stage.name.clone()) {
                return Err(SpecError::DuplicateStage {
                    pipeline,
                    stage: stage.name.clone(),
                });
            }
            if let Err(problem) = stage.limits.validate() {
                return Err(SpecError::BadLimits {
                    pipeline,
                    stage: stage.name.clone(),
                    problem,
                });
            }
            stage.config.sort();
        }
        Ok(ChainSpec {
            pipeline,
            routes,
            route_ids,
            default_route,
            stages,
            time: super::time::EventTime::default(),
            reset: None,
        })
    }

    /// The same chain, starting `stage`'s state empty when workers switch to it.
    pub fn with_reset(mut self, stage: Option<String>) -> Self {
        self.reset = stage;
        self
    }

    /// The same chain with these event-time settings (watermark delay, idle timeout, source
    /// topics).
    pub fn with_event_time(mut self, time: super::time::EventTime) -> Self {
        self.time = time;
        self
    }

    /// The event-time settings.
    pub fn event_time(&self) -> &super::time::EventTime {
        &self.time
    }

    /// Whether any stage keeps state.
    pub fn is_stateful(&self) -> bool {
        self.stages.iter().any(|s| s.module.is_stateful())
    }

    /// The stateful stage whose state this version starts empty, if any.
    pub fn reset(&self) -> Option<&str> {
        self.reset.as_deref()
    }

    /// The pipeline name.
    pub fn pipeline(&self) -> &str {
        &self.pipeline
    }

    /// The declared route names, indexed by [`RouteId`].
    pub fn routes(&self) -> &[String] {
        &self.routes
    }

    /// The id of a declared route.
    pub fn route_id(&self, name: &str) -> Option<RouteId> {
        self.route_ids.get(name).copied()
    }

    /// The name of a route.
    pub fn route_name(&self, id: RouteId) -> &str {
        self.routes
            .get(usize::from(id.0))
            .map_or("<unknown route>", String::as_str)
    }

    /// The default route.
    pub fn default_route(&self) -> RouteId {
        self.default_route
    }

    /// The stages, in order.
    pub fn stages(&self) -> &[StageSpec] {
        &self.stages
    }
}
