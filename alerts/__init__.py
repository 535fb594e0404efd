"""fleetmon alerting: Prometheus-format rules over the collector's live windows, and notifiers."""

from alerts.engine import AlertEngine
from alerts.errors import AlertsError, RuleError
from alerts.model import Alert, AlertState, EventNotice, NodeStatus, Notifier
from alerts.rulefile import AlertingRule, RecordingRule, RuleGroup, load_files

__all__ = ["Alert", "AlertEngine", "AlertState", "AlertingRule", "AlertsError", "EventNotice", "NodeStatus",
           "Notifier", "RecordingRule", "RuleError", "RuleGroup", "load_files"]
