"""repedge dashboards: a live web page (`dashboard serve`) and a terminal view (`dashboard top`)."""
