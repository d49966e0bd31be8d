"""The README's automation for interested leads is one Prefect accepts, on the event we emit."""

from pathlib import Path

import yaml
from prefect.events.schemas.automations import AutomationCore, EventTrigger

from tasks.replies import INTERESTED_EVENT

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_automation_validates_and_listens_to_the_interested_event():
    text = README.read_text(encoding="utf-8")
    block = text.split("save this as `interested.yaml`", 1)[1].split("```yaml\n", 1)[1]
    document = yaml.safe_load(
        block.split("```", 1)[0].replace(
            "<the id of the sales-alerts block>", "00000000-0000-0000-0000-000000000000"
        )
    )
    [automation] = [AutomationCore.model_validate(a) for a in document["automations"]]
    assert isinstance(automation.trigger, EventTrigger)
    assert automation.trigger.expect == {INTERESTED_EVENT}
    assert "prefect automation create --from-file interested.yaml" in text
