#include "httpd.h"
#include "http_config.h"
module AP_MODULE_DECLARE_DATA bgd_test_module;
AP_DECLARE_MODULE(bgd_test) = { STANDARD20_MODULE_STUFF, NULL, NULL, NULL, NULL, NULL, NULL, AP_MODULE_FLAG_NONE };
