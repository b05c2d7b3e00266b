"""The medical out-of-pocket threshold of the department cross-checks lives in the monitoring
configuration: per region prefix and year, longest prefix wins, checked like the lines."""

from __future__ import annotations

import pytest

from forms.indicators import MonitoringConfig, MonitoringConfigError


def test_the_threshold_is_looked_up_by_prefix_and_year_and_round_trips() -> None:
    config = MonitoringConfig(
        medical_out_of_pocket_yuan={"53": {2025: 15000}, "530102": {"2026": 20000}}
    )
    assert config.medical_out_of_pocket_threshold("530102001201", 2026) == 20000
    assert config.medical_out_of_pocket_threshold("530102001201", 2025) == 15000
    assert config.medical_out_of_pocket_threshold("532301001201", 2027) == 15000  # latest earlier
    assert config.medical_out_of_pocket_threshold("110101001201", 2026) is None
    assert MonitoringConfig.from_mapping(config.to_mapping()) == config


def test_a_configuration_without_it_keeps_its_mapping_and_a_bad_amount_is_refused() -> None:
    assert "medical_out_of_pocket_yuan" not in MonitoringConfig().to_mapping()
    with pytest.raises(MonitoringConfigError):
        MonitoringConfig(medical_out_of_pocket_yuan={"53": {2026: -5}})
