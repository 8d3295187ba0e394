"""A stock DICOMweb client (the `dicomweb-client` package, unmodified) through the gateway:
search a patient's studies, read a study's metadata, retrieve an instance and a rendered frame,
and be refused a study it may not see. Prints what it found as one JSON object.

Usage: python dicomweb_client_check.py <gateway>/dicomweb <token> <patient id> <hidden study uid>
"""

import json
import sys

import requests
from dicomweb_client.api import DICOMwebClient

base, token, patient, hidden = sys.argv[1:5]
client = DICOMwebClient(url=base, headers={"Authorization": f"Bearer {token}"})

studies = client.search_for_studies(search_filters={"PatientID": patient})
assert studies, "no study found"
uid = studies[0]["0020000D"]["Value"][0]
series = client.search_for_series(study_instance_uid=uid)
assert series, "no series found"
metadata = client.retrieve_study_metadata(uid)
first = metadata[0]
series_uid = first["0020000E"]["Value"][0]
sop = first["00080018"]["Value"][0]
instance = client.retrieve_instance(uid, series_uid, sop)
assert instance.SOPInstanceUID == sop, instance.SOPInstanceUID
assert instance.StudyInstanceUID == uid
frame = client.retrieve_instance_frames_rendered(
    uid, series_uid, sop, frame_numbers=[1], media_types=("image/jpeg",)
)
assert frame[:2] == b"\xff\xd8", frame[:8]

try:
    client.retrieve_study_metadata(hidden)
    sys.exit("a hidden study was served")
except requests.exceptions.HTTPError as error:
    refused = error.response.status_code

print(
    json.dumps(
        {
            "studies": len(studies),
            "series": len(series),
            "instances": len(metadata),
            "sop": sop,
            "rows": int(instance.Rows),
            "rendered_bytes": len(frame),
            "hidden": refused,
        }
    )
)
