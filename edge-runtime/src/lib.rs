//! # lapa-edge
//!
//! The part of lapa that runs on the board every day: a camera frame and an instruction go to a
//! policy, which answers with a chunk of future joint targets; a fixed-rate control loop blends the
//! chunks on its own clock, passes every command through a safety filter that knows nothing of
//! the model, and drives the arm through `lapa-bridge`'s [`Arm`](lapa_bridge::arm::Arm) trait.
//!
//! - [`chunk`]: action chunks on the loop's clock, interpolation, temporal ensembling.
//! - [`safety`]: joint limits from the calibration, max step per tick, fingertip workspace box,
//!   gripper load cap, hold on missing or non-finite actions.
//! - [`pace`]: absolute-deadline pacing (sleep, then spin) and timing histograms.
//! - [`cyclelog`]: the compact per-cycle log a run writes and `lapa-edge replay` reads back.
//! - [`camera`]: the camera trait, recorded-frame sources, crop/resize, YUYV and MJPEG decode.
//! - [`v4l2`]: the board's USB camera: format negotiation and capture.
//! - [`sim`]: the simulator as arm, camera and scripted-expert policy, so the whole board loop
//!   runs here end to end (`lapa-edge run --sim`).
//! - [`remote`]: the policy on another machine, through openpi's websocket protocol.
//! - [`runtime`]: the control loop, the inference thread and what they share.
//! - [`instruction`]: instruction sources (the terminal, socket clients, scripts; speech later)
//!   behind one trait, and the one consumer that applies their commands.
//! - [`console`]: the local web console (camera, instruction, timing, safety, a stop button).
//! - [`control`]: the control socket (change the instruction, pause, stop while running).
//! - [`worker`]: a background thread stopped and joined when its handle drops.
//! - [`status_led`]: the board's status LED (on: may move; blinking: paused or stopped).
//! - [`calibrate`]: LeRobot's calibration procedure and calibration files.
//! - [`hw`]: the real servo bus a board profile names.
//! - [`doctor`]: board checks in plain words (servos that do not answer, voltages, calibration).
//! - [`estop`]: the e-stop button (GPIO, normally closed), watched on its own thread.
//! - [`record`]: what the robot saw and did, as a LeRobot v3.0 dataset.
//! - [`teleop`]: a leader arm drives the follower through the safety filter; episodes recorded.
//! - [`speech`]: spoken instructions — microphone, voice-activity detection, PocketSphinx
//!   (feature `speech`) with a grammar of the instruction vocabulary, "stop" first.

pub mod calibrate;
pub mod camera;
pub mod chunk;
pub mod console;
pub mod control;
pub mod cyclelog;
pub mod doctor;
pub mod estop;
pub mod hw;
pub mod instruction;
pub mod pace;
pub mod record;
pub mod remote;
pub mod runtime;
pub mod safety;
pub mod sim;
pub mod speech;
pub mod status_led;
pub mod teleop;
pub mod v4l2;
pub mod worker;

pub use lapa_boards::Joints;
