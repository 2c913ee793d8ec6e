// Command-line parsing shared by the programs (boost::program_options), with one error line on
// bad flags and --help handled the same way everywhere; and --config FILE for the long-running
// programs (the agent, the staging): the same keys as their long flags, flags winning.
#pragma once

#include <boost/program_options.hpp>
#include <iostream>
#include <optional>
#include <string>

#include "blockrep/base/cli.h"
#include "blockrep/base/status.h"

namespace blockrep {

// The description of --config, for the programs that take it.
inline constexpr const char* kConfigHelp =
    "read options from FILE: one KEY = VALUE a line (KEY a long flag's name without the dashes; a "
    "switch like `once` takes no value, or true/false; repeat a key for each of several values, "
    "as --volume); `#` starts a comment; a flag on the command line wins over the file";

// Stores the options of config file `path` into `vm` after the command line's (which win).
// Every line is checked alone first, so an error names the file, the line and the key.
Status LoadConfigFile(const std::string& path, const boost::program_options::options_description& desc,
                      boost::program_options::variables_map* vm);

// Parses argv (and the --config file, when `desc` has that option and it is given) into `vm`.
// Returns an exit status when the program should stop now (after --help, or after printing the
// error for a bad flag or config file); nullopt to go on.
std::optional<int> ParseCommandLine(const char* prog, const boost::program_options::options_description& desc,
                                    int argc, char** argv, boost::program_options::variables_map* vm);

}  // namespace blockrep
