#include "blockrep/base/options.h"

#include <algorithm>
#include <fstream>
#include <sstream>
#include <vector>

namespace blockrep {
namespace po = boost::program_options;
namespace {

constexpr size_t kConfigBytesMax = 1 << 20;

std::string Trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t\r");
  if (a == std::string::npos) return "";
  size_t b = s.find_last_not_of(" \t\r");
  return s.substr(a, b - a + 1);
}

}  // namespace

Status LoadConfigFile(const std::string& path, const po::options_description& desc, po::variables_map* vm) {
  std::ifstream in(path);
  if (!in) return ErrnoStatus("config file " + path, errno);
  std::stringstream text;
  text << in.rdbuf();
  if (text.str().size() > kConfigBytesMax)
    return InvalidArgument("config file " + path + " is over " + std::to_string(kConfigBytesMax) + " bytes");
  std::vector<std::string> all;
  std::string line;
  for (int n = 1; std::getline(text, line); ++n) {
    std::string where = path + " line " + std::to_string(n);
    line = Trim(line.substr(0, line.find('#')));
    if (line.empty()) continue;
    size_t eq = line.find('=');
    std::string key = Trim(line.substr(0, eq));
    std::string value = eq == std::string::npos ? "" : Trim(line.substr(eq + 1));
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"') value = value.substr(1, value.size() - 2);
    const po::option_description* d = key == "config" || key == "help" ? nullptr : desc.find_nothrow(key, false);
    if (d == nullptr || d->long_name() != key)
      return InvalidArgument(where + ": unknown key '" + key +
                             "' (the keys are the long flags of --help, without the dashes)");
    std::vector<std::string> tokens;
    if (d->semantic()->max_tokens() == 0) {  // a switch
      if (value == "false" || value == "no" || value == "0") continue;
      if (!(value.empty() || value == "true" || value == "yes" || value == "1"))
        return InvalidArgument(where + ": key '" + key + "' is a switch: give no value, or true or false");
      tokens = {"--" + key};
    } else {
      if (value.empty()) return InvalidArgument(where + ": key '" + key + "' needs a value");
      tokens = {"--" + key, value};
    }
    // The line alone, then with the lines before it (a key given twice that takes one value).
    all.insert(all.end(), tokens.begin(), tokens.end());
    for (const std::vector<std::string>* check : {&tokens, &all}) {
      try {
        po::variables_map scratch;
        po::store(po::command_line_parser(*check).options(desc).run(), scratch);
      } catch (const po::error& e) {
        return InvalidArgument(where + ": key '" + key + "': " + e.what());
      }
    }
  }
  try {
    po::store(po::command_line_parser(all).options(desc).run(), *vm);
  } catch (const po::error& e) {
    return InvalidArgument("config file " + path + ": " + e.what());
  }
  return Status::Ok();
}

std::optional<int> ParseCommandLine(const char* prog, const po::options_description& desc, int argc, char** argv,
                                    po::variables_map* vm) {
  try {
    po::store(po::parse_command_line(argc, argv, desc), *vm);
    if (desc.find_nothrow("config", false) != nullptr && vm->count("config")) {
      Status st = LoadConfigFile((*vm)["config"].as<std::string>(), desc, vm);
      if (!st.ok()) return ReportFatal(prog, st);
    }
    po::notify(*vm);
  } catch (const po::error& e) {
    return ReportFatal(prog, InvalidArgument(std::string(e.what()) + " (see " + prog + " --help)"));
  }
  if (vm->count("help")) {
    std::cout << desc << "\n";
    return 0;
  }
  return std::nullopt;
}

}  // namespace blockrep
