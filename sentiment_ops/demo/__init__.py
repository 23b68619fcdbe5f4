"""``sentops demo``: the whole loop on bundled data, against a real server (``story``)."""

from sentiment_ops.demo.client import drift_summary, post_labels, score_through_api, send_traffic, wait_for_version
from sentiment_ops.demo.figure import P_FLOOR, draw_story, story_checks, story_figure
from sentiment_ops.demo.report import DemoOptions, DemoReport, StageFn, took
from sentiment_ops.demo.server import ServeProcess, ServerProcess, free_port
from sentiment_ops.demo.story import demo_train_settings, ensure_production, run_demo

__all__ = [
    "P_FLOOR",
    "DemoOptions",
    "DemoReport",
    "ServeProcess",
    "ServerProcess",
    "StageFn",
    "demo_train_settings",
    "draw_story",
    "drift_summary",
    "ensure_production",
    "free_port",
    "post_labels",
    "run_demo",
    "score_through_api",
    "send_traffic",
    "story_checks",
    "story_figure",
    "took",
    "wait_for_version",
]
