/* dashboard.h -- the router's self-contained live dashboard page. */
#ifndef RM_DASHBOARD_H
#define RM_DASHBOARD_H

/* HTML + JS + inline SVG, no external resources; polls /api/cluster. */
extern const char rm_dashboard_html[];

#endif
