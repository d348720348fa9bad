"""Code systems and codes that cross service boundaries: part of the event contract.

Each service owns its clinical rules; these are only the names they agree on, the way the
topic names are. Local code systems live under CODE_BASE.
"""

CODE_BASE = "https://iop-suite.org/fhir/CodeSystem"

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
CPT = "http://www.ama-assn.org/go/cpt"
HCPCS = "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets"
V3_ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
V3_CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
V3_ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
GOAL_ACHIEVEMENT = "http://terminology.hl7.org/CodeSystem/goal-achievement"
CAREPLAN_CATEGORY_US_CORE = "http://hl7.org/fhir/us/core/CodeSystem/careplan-category"
SERVICE_TYPE = "http://terminology.hl7.org/CodeSystem/service-type"

# Local code systems (DOMAIN.md 2.2: there is no standard code system for ASAM levels).
ASAM_LEVEL = f"{CODE_BASE}/asam-level"            # codes "0.5", "1", "2.1", "2.5", "3.1", "3.5", "3.7", "4"
IOP_OBSERVATION = f"{CODE_BASE}/iop-observation"  # code "asam-level-recommendation"
IOP_FINDING = f"{CODE_BASE}/iop-finding"          # component codes of the recommendation Observation
IOP_DISPOSITION = f"{CODE_BASE}/iop-disposition"  # "iop", "higher-level", "lower-level", "urgent-safety-review"
IOP_CAREPLAN = f"{CODE_BASE}/iop-careplan"        # "iop-treatment-plan", "aftercare-step-down"
IOP_IDENTIFIER = "https://iop-suite.org/fhir/NamingSystem"

RECOMMENDATION_CODE = "asam-level-recommendation"
ASAM_EDITION = "3"

# Score totals (DOMAIN.md section 1). Panels are never used as score codes.
PHQ9_TOTAL = "44261-6"
PHQ9_ITEM9 = "44260-8"
GAD7_TOTAL = "70274-6"
AUDITC_TOTAL = "75626-2"
DAST10_TOTAL = "82667-7"
CSSRS_RISK = "93374-7"

# Part 2 security labels (DOMAIN.md 5.2), put on every resource derived from IOP care.
PART2_LABELS = [
    {"system": V3_CONFIDENTIALITY, "code": "R", "display": "restricted"},
    {"system": V3_ACT_CODE, "code": "42CFRPart2", "display": "42 CFR Part2"},
    {"system": V3_ACT_CODE, "code": "SUD", "display": "substance use disorder information sensitivity"},
    {"system": V3_ACT_CODE, "code": "NORDSCLCD", "display": "no redisclosure without consent directive"},
]

# A session that counts as an aftercare check-in: the encounters service's check-in kind (HCPCS H0004),
# or the step-down plan's check-in activity (SNOMED 390906007 "Follow-up encounter").
CHECKIN_CODES = frozenset({(HCPCS, "H0004"), (SNOMED, "390906007")})
