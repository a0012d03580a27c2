# The admin's dates and times in one format (core.formats.TIME_FORMAT): 24 h with the time zone,
# "2026-12-02 17:23:03 UTC", instead of English's "Dec. 2, 2026, 5:23 p.m.". Settings' FORMAT_MODULE_PATH.
DATETIME_FORMAT = "Y-m-d H:i:s T"
SHORT_DATETIME_FORMAT = "Y-m-d H:i:s T"
DATE_FORMAT = "Y-m-d"
SHORT_DATE_FORMAT = "Y-m-d"
TIME_FORMAT = "H:i:s"
