"""XLSForms as ODK and Kobo users write them, in the Markdown table form pyxform's tests use.

Each entry is ``name -> Markdown``; the conformance suite (test_xlsform_conformance.py) asserts
what each maps to, the differential test (test_xlsform_differential.py) runs every entry through
pyxform's own reader and converter and through ours. The first forms follow the examples of the
XLSForm specification (https://xlsform.org/en/): question types, groups, repeats, relevance,
constraints, multiple languages, settings; the later ones cover each row of issue 19's list.
"""

from __future__ import annotations

CORPUS: dict[str, str] = {
    # --- from the XLSForm specification's examples ---------------------------------------
    "spec_question_types": """
| survey |
|        | type                     | name          | label                          | calculation |
|        | integer                  | age           | How old are you?               |             |
|        | decimal                  | weight        | Weight in kg                   |
|        | text                     | full_name     | What is your name?             |
|        | select_one yes_no        | likes_pizza   | Do you like pizza?             |
|        | select_multiple pizzas   | favourites    | Favourite toppings             |
|        | note                     | thanks        | Thank you                      |
|        | geopoint                 | location      | Where are you?                 |
|        | image                    | photo         | Take a photo                   |
|        | date                     | visit_date    | Date of the visit              |
|        | calculate                | age_months    |                                | ${age} * 12 |
| choices |
|         | list_name | name       | label      |
|         | yes_no    | yes        | Yes        |
|         | yes_no    | no         | No         |
|         | pizzas    | cheese     | Cheese     |
|         | pizzas    | pepperoni  | Pepperoni  |
""",
    "spec_relevant_constraint_required": """
| survey |
|        | type              | name        | label                 | relevant              | constraint        | constraint_message   | required | required_message |
|        | select_one yes_no | likes_pizza | Do you like pizza?    |                       |                   |                      | yes      | Please answer        |
|        | integer           | slices      | How many slices?      | ${likes_pizza} = 'yes' | . >= 0 and . < 20 | Between 0 and 19     | true     |                  |
|        | text              | email       | E-mail                |                       | regex(., '^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$') | Not an e-mail | false |     |
| choices |
|         | list_name | name | label |
|         | yes_no    | yes  | Yes   |
|         | yes_no    | no   | No    |
""",
    "spec_groups_and_repeats": """
| survey |
|        | type         | name        | label            | appearance | relevant          | required |
|        | begin group  | respondent  | Respondent       | field-list |                   | false    |
|        | text         | name        | Name             |            |                   |          |
|        | integer      | age         | Age              |            |                   |          |
|        | end group    |             |                  |            |                   |          |
|        | begin repeat | child       | Children         |            | ${age} > 18       |          |
|        | text         | child_name  | Child's name     |            |                   |          |
|        | integer      | child_age   | Child's age      |            |                   |          |
|        | end repeat   |             |                  |            |                   |          |
""",
    "spec_multiple_languages": """
| survey |
|        | type              | name  | label::English (en) | label::中文 (zh) | hint::English (en) | hint::中文 (zh) | constraint | constraint_message::English (en) | constraint_message::中文 (zh) |
|        | integer           | age   | How old are you?     | 您多大年纪？     | In years           | 周岁            | . < 130    | Too old                          | 年龄过大                      |
|        | select_one yes_no | smoke | Do you smoke?        | 您吸烟吗？       |                    |                 |            |                                  |                               |
| choices |
|         | list_name | name | label::English (en) | label::中文 (zh) |
|         | yes_no    | yes  | Yes                 | 是               |
|         | yes_no    | no   | No                  | 否               |
| settings |
|          | form_title | form_id     | version    | default_language |
|          | Languages  | Multi-Lang  | 2026112501 | English (en)     |
""",
    "spec_metadata": """
| survey |
|        | type        | name        | label   |
|        | start       | start       |         |
|        | end         | end         |         |
|        | today       | today       |         |
|        | deviceid    | deviceid    |         |
|        | username    | username    |         |
|        | phonenumber | phonenumber |         |
|        | audit       | audit       |         |
|        | text        | village     | Village |
""",
    # --- issue 19: as county staff and partner organisations write them ------------------
    "no_settings_english_only": """
| survey |
|        | type    | name         | label                  | hint               |
|        | text    | head_name    | Name of the household head | As on the ID card |
|        | integer | members      | Number of members      |                    |
""",
    "zh_variants": """
| survey |
|        | type | name | label::zh_CN | label::English (en) |
|        | text | a    | 户主姓名      | Head of household   |
| choices |
|         | list_name | name | label::简体中文 (zh-Hans) |
|         | unused    | x    | 未用                      |
""",
    "uyghur_and_single_colon": """
| survey |
|        | type | name | label:English | label::Uyghur (ug) | label::中文 (zh) |
|        | text | a    | Name          | ئىسمى              | 姓名             |
""",
    "ids_versions_and_names": """
| survey |
|        | type                   | name              | label          | relevant                 |
|        | select_one wall:type   | building:material | Wall material  |                          |
|        | integer                | HH-Size           | Household size |                          |
|        | text                   | Q1.2              | Remarks        | ${HH-Size} > 0           |
| choices |
|         | list_name | name  | label |
|         | wall:type | brick | Brick |
|         | wall:type | adobe | Adobe |
| settings |
|          | form_id            | version | form_title |
|          | Household-Survey.v2 | v3      | 住户调查   |
""",
    "legacy_spellings": """
| survey |
|        | type                             | name     | label        |
|        | string                           | name     | Name         |
|        | int                              | age      | Age          |
|        | gps                              | place    | Place        |
|        | select one from yes_no           | ok       | OK?          |
|        | select all that apply from crops | crops    | Crops        |
|        | begin_group                      | g        | Group        |
|        | photo                            | house    | House photo  |
|        | end_group                        |          |              |
| choices |
|         | list_name | name  | label |
|         | yes_no    | yes   | Yes   |
|         | yes_no    | no    | No    |
|         | crops     | maize | Maize |
|         | crops     | rice  | Rice  |
""",
    "appearances_and_extra_columns": """
| survey |
|        | type                | name  | label  | appearance   | notes             | media::image | team_code | guidance_hint |
|        | select_one yes_no   | a     | A      | compact-2    | for the trainers  | a.png        | T1        | Ask slowly    |
|        | select_one yes_no   | b     | B      | quickcompact |                   |              |           |               |
|        | geopoint            | c     | C      | maps         |                   |              |           |               |
|        | date                | d     | D      | month-year   |                   |              |           |               |
|        | integer             | e     | E      |              |                   |              |           |               |
| choices |
|         | list_name | name | label |
|         | yes_no    | yes  | Yes   |
|         | yes_no    | no   | No    |
""",
    "default_and_required_message": """
| survey |
|        | type    | name   | label    | default | required | required_message |
|        | integer | people | People   | 1       | yes      | Fill this in     |
""",
    "texts_in_every_language": """
| survey |
|        | type    | name   | label::中文 (zh) | label::English (en) | required | required_message::中文 (zh) | required_message::English (en) | required_message::Uyghur (ug) | guidance_hint::中文 (zh) | guidance_hint::English (en) |
|        | integer | people | 人数             | People              | yes      | 请填写人数                  | Fill this in                   | تولدۇرۇڭ                     | 含外出务工人员           | Count migrant workers too   |
""",
    "trigger_calculation": """
| survey |
|        | type    | name    | label   | calculation              | trigger   |
|        | integer | weight  | Weight  |                          |           |
|        | decimal | weighed | Weighed | decimal-date-time(now()) | ${weight} |
""",
    "hidden_values": """
| survey |
|        | type    | name    | label  | calculation    | default |
|        | integer | size    | Size   |                |         |
|        | hidden  | doubled |        | ${size} * 2    |         |
|        | hidden  | batch   |        |                | B-7     |
|        | hidden  | wave    |        |                | 3       |
|        | hidden  | spare   |        |                |         |
""",
    "mapped_types": """
| survey |
|        | type                        | name     | label          | parameters          |
|        | range                       | score    | Score          | start=1 end=5 step=1 |
|        | range                       | ratio    | Ratio          | start=0 end=1 step=0.1 |
|        | barcode                     | code     | Scan the code  |                     |
|        | acknowledge                 | consent  | I agree        |                     |
|        | select_one source or_other  | source   | Water source   |                     |
| choices |
|         | list_name | name  | label |
|         | source    | well  | Well  |
|         | source    | tap   | Tap   |
""",
    "pulldata_from_attached_csv": """
| survey |
|        | type      | name   | label | calculation                                      |
|        | text      | crop   | Crop  |                                                  |
|        | calculate | price  |       | pulldata('prices', 'yuan_per_kg', 'crop', ${crop}) |
|        | calculate | unit   |       | pulldata('prices', 'unit', 'crop', ${crop})      |
""",
    "cascading_choice_filter": """
| survey |
|        | type                | name     | label    | choice_filter                         |
|        | select_one county   | county   | County   |                                       |
|        | select_one town     | town     | Town     | county=${county}                      |
|        | select_multiple crop | crops   | Crops    | selected(${county}, region) and name != 'none' |
| choices |
|         | list_name | name | label  | county | region | media::image |
|         | county    | c1   | C1     |        |        |              |
|         | county    | c2   | C2     |        |        |              |
|         | town      | t1   | T1     | c1     |        |              |
|         | town      | t2   | T2     | c2     |        |              |
|         | crop      | rice | Rice   |        | c1     | rice.png     |
|         | crop      | corn | Corn   |        | c2     |              |
|         | crop      | none | None   |        | c1     |              |
""",
    "computed_repeat_count": """
| survey |
|        | type         | name    | label   | repeat_count |
|        | integer      | n       | N       |              |
|        | begin repeat | member  | Member  | ${n}         |
|        | text         | mname   | Name    |              |
|        | end repeat   |         |         |              |
""",
    "defaults_static_and_dynamic": """
| survey |
|        | type    | name     | label    | default          | read_only |
|        | integer | people   | People   | 1                |           |
|        | text    | village  | Village  | 大寨              |           |
|        | date    | visited  | Visited  | today()          |           |
|        | date    | planned  | Planned  | 2026-12-01       |           |
|        | integer | adults   | Adults   | ${people} - 1    |           |
|        | text    | batch    | Batch    | B-7              | yes       |
""",
    "id_number_domain_check": """
| survey |
|        | type | name      | label    | sensitive | merge  | constraint  |
|        | text | id_number | 身份证号 | yes       | review | id-valid(.) |
""",
    # --- what we refuse (each for a listed reason) --------------------------------------
    "refused_entities": """
| survey |
|        | type | name | label | save_to |
|        | text | tree | Tree  | species |
| entities |
|          | list_name | label    |
|          | trees     | ${tree}  |
""",
    "time_media_traces_and_rank": """
| survey |
|        | type      | name     | label     |
|        | time      | woke     | Woke up   |
|        | datetime  | visited  | Visited   |
|        | audio     | voice    | Voice     |
|        | video     | clip     | Clip      |
|        | file      | letter   | Letter    |
|        | geotrace  | path     | Path      |
|        | geoshape  | field    | Field     |
|        | rank need | needs    | Rank needs |
| choices |
|         | list_name | name   | label  |
|         | need      | water  | Water  |
|         | need      | school | School |
|         | need      | road   | Road   |
""",
    "refused_select_from_file_without_its_file": """
| survey |
|        | type                             | name    | label   |
|        | select_one_from_file missing.csv | village | Village |
""",
    "choices_from_attached_files": """
| survey |
|        | type                                | name    | label   | choice_filter    |
|        | select_one county                   | county  | County  |                  |
|        | select_one_from_file villages.csv   | village | Village | county=${county} |
|        | select_multiple_from_file crops.xml | crops   | Crops   |                  |
| choices |
|         | list_name | name | label |
|         | county    | c1   | C1    |
|         | county    | c2   | C2    |
""",
    "read_only_without_value": """
| survey |
|        | type | name | label | read_only |
|        | text | code | Code  | yes       |
""",
    "odk_time_functions": """
| survey |
|        | type      | name    | label   | calculation                    |
|        | date      | visited | Visited |                                |
|        | calculate | stamp   |         | once(decimal-date-time(now())) |
|        | calculate | day_no  |         | decimal-date-time(${visited})  |
""",
    "odk_repeat_functions": """
| survey |
|        | type              | name     | label     | calculation                          |
|        | begin repeat      | member   | Member    |                                      |
|        | integer           | age      | Age       |                                      |
|        | select_one rel    | rel      | Relation  |                                      |
|        | calculate         | row_no   |           | position(..)                         |
|        | calculate         | rel_name |           | jr:choice-name(${rel}, '${rel}')     |
|        | end repeat        |          |           |                                      |
|        | calculate         | first    |           | indexed-repeat(${age}, ${member}, 1) |
|        | calculate         | total    |           | sum(${age})                          |
|        | calculate         | people   |           | count(${age})                        |
| choices |
|         | list_name | name  | label::中文 (zh) | label::English (en) |
|         | rel       | head  | 户主             | Head                |
|         | rel       | child | 子女             | Child               |
""",
    # --- what pyxform itself refuses ----------------------------------------------------
    "pyxform_refuses_unknown_type": """
| survey |
|        | type   | name | label |
|        | slider | s    | S     |
""",
    "pyxform_refuses_duplicate_names": """
| survey |
|        | type | name | label |
|        | text | a    | A     |
|        | text | a    | A2    |
""",
}

#: Files uploaded with the corpus forms (select_one_from_file), by file name.
ATTACHMENTS: dict[str, bytes] = {
    "villages.csv": (
        "name,label::English (en),label::中文 (zh),county,elevation\n"
        "v1,Upper,上寨,c1,1200\nv2,Lower,下寨,c2,900\nv3,River,河边,c1,800\n"
    ).encode(),
    "prices.csv": "crop,yuan_per_kg,unit\nrice,3.2,公斤\ncorn,2.45,公斤\n".encode(),
    "crops.xml": (
        "<root><item><name>rice</name><label>稻谷</label></item>"
        "<item><name>corn</name><label>玉米</label></item></root>"
    ).encode(),
}

#: Codes we refuse an ODK-valid form with: each one is a thing we cannot keep yet (issue 19's
#: refuse list, docs/xlsform.md "Refused").
LISTED_REFUSALS = {
    "unsupported_sheet",
    "unsupported_column",
    "unsupported_type",
    "missing_attachment",
}

#: ODK-valid forms we still refuse for a reason that is not on the refuse list (issue 19 left
#: open): name -> the codes they are refused with. The differential test pins them, so closing a
#: gap shows up as a test to update.
KNOWN_GAPS: dict[str, set[str]] = {}
