using Retrieval.Trainer.Cli;

return await TrainerCommands.Build().Parse(args).InvokeAsync();
