#!/bin/sh
# An example batch job: prints where it runs.
echo "reservation $ATS_RESERVATION_ID job $ATS_JOB_ID on $ATS_HOSTS"
