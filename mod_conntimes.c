#include "httpd.h"
#include "http_config.h"
module AP_MODULE_DECLARE_DATA conntimes_module;
AP_DECLARE_MODULE(conntimes) = { STANDARD20_MODULE_STUFF, NULL, NULL, NULL, NULL, NULL, NULL, AP_MODULE_FLAG_NONE };
