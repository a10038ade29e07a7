using Retrieval.Trainer.Cli;
using Retrieval.Trainer.Training;

OpenMpSettings.PreferPassiveWaiting();
return await TrainerCommands.Build().Parse(args).InvokeAsync();
