//! Voice commands as a stage: the "actions" thread runs the allowlisted action the
//! coordinator decided on and writes the action log, which records each stage of an action's
//! life (requested, confirmed/declined/expired/cancelled, started, finished). "Started" is on
//! disk before the action runs.

use crossbeam_channel::{Receiver, Sender};

use super::TurnId;
use super::coordinator::Event;
use crate::commands::{self, ActionLog, Commands, Invocation, Outcome, Stage};

pub enum Job {
    /// Log "started", run the action, log "finished", report it.
    Run {
        turn: TurnId,
        invocation: Invocation,
        transcript: String,
    },
    /// Log a stage the coordinator decided.
    Log {
        turn: TurnId,
        stage: Stage,
        invocation: Invocation,
        transcript: String,
    },
}

/// The worker: runs until the job channel closes or the coordinator is gone.
pub fn run(
    commands: &Commands,
    log: Option<&ActionLog>,
    jobs: &Receiver<Job>,
    events: &Sender<Event>,
) {
    let record = |turn: TurnId,
                  stage: Stage,
                  inv: &Invocation,
                  transcript: &str,
                  arguments: Vec<String>,
                  result: Option<&Outcome>| {
        if let Some(log) = log {
            log.record(turn.get(), stage, inv, transcript, arguments, result);
        }
    };
    for job in jobs.iter() {
        let (turn, invocation, transcript) = match job {
            Job::Log {
                turn,
                stage,
                invocation,
                transcript,
            } => {
                record(turn, stage, &invocation, &transcript, Vec::new(), None);
                continue;
            }
            Job::Run {
                turn,
                invocation,
                transcript,
            } => (turn, invocation, transcript),
        };
        let _span = tracing::info_span!("turn", turn = turn.get()).entered();
        let action = commands.resolve(&invocation);
        let arguments = action.as_ref().map(commands::arguments).unwrap_or_default();
        record(
            turn,
            Stage::Started,
            &invocation,
            &transcript,
            arguments.clone(),
            None,
        );
        if events
            .send(Event::ActionStarted {
                turn,
                at: std::time::Instant::now(),
            })
            .is_err()
        {
            break;
        }
        let outcome = match &action {
            Some(a) => commands::execute(a),
            None => Outcome::Failed {
                message: format!("no command {:?}", invocation.command),
            },
        };
        tracing::info!(
            stage = "actions",
            command = invocation.command,
            ?outcome,
            "action"
        );
        record(
            turn,
            Stage::Finished,
            &invocation,
            &transcript,
            arguments,
            Some(&outcome),
        );
        if events.send(Event::ActionDone { turn, outcome }).is_err() {
            break;
        }
    }
}
